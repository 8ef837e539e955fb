# Developer entry points. CI runs .ci/run, which is `make lint` then
# `make test`, so a green `make lint test` here means a green CI.
#
# Tests and the demo need a PostgreSQL server; scripts/pg-server finds one
# ($TEST_DATABASE_URL, $DATABASE_URL, a passwordless postgres on
# 127.0.0.1:5432) or starts a private one in .pg/ (see `scripts/pg-server help`).

CARGO ?= cargo
# Extra arguments for cargo test, e.g. `make test ARGS='purge -- --nocapture'`.
ARGS ?=
# The build the measuring targets use (the docs test sets dev: commands, not figures).
RELINK_CARGO_PROFILE ?= release

.DEFAULT_GOAL := help
.PHONY: help lint test demo bench bench-plan build pg-status pg-stop pg-tls pg-replica clean

help: ## list these targets
	@echo 'usage: make <target>'
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

lint: ## check formatting and run clippy with warnings as errors (as CI does)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# The URL is looked up once, before cargo starts, so a private server is
# started (or reused) a single time rather than by each test binary.
test: ## run all tests against a PostgreSQL server (starts a private one if needed)
	url=$$(scripts/pg-server url) && TEST_DATABASE_URL="$$url" $(CARGO) test --all-targets $(ARGS)

demo: ## walk through generate, dry run, run, verify, status, rerun, purge on relink_demo
	scripts/demo

bench: ## relink vs the set-based SQL yardstick on 1M and 100k profiles (scripts/bench)
	scripts/bench

bench-plan: ## planning throughput of the pure core on one core (no database)
	$(CARGO) run --profile $(RELINK_CARGO_PROFILE) --quiet --example plan_throughput

build: ## build the release binary (target/release/relink)
	$(CARGO) build --release

pg-status: ## say which PostgreSQL server tests and the demo would use
	scripts/pg-server status

pg-stop: ## stop the private servers (url, tls, replica, statements, production, pooler, node-exporter), if they run
	scripts/pg-server stop

# Tests start these on demand; the targets are for trying things by hand,
# e.g. `eval "$$(scripts/pg-server tls)"` then psql with $$PG_TLS_CA.
pg-tls: ## start the private TLS-only server and print its settings (KEY=value)
	scripts/pg-server tls

pg-replica: ## start the private primary + streaming replica and print their URLs
	scripts/pg-server replica

# Stop the server before deleting its data directory.
clean: ## remove build output and the private PostgreSQL servers (.pg)
	scripts/pg-server stop
	$(CARGO) clean
	rm -rf .pg
