//! Test harness against real servers: each test gets its own freshly
//! created database with the app schema from `sql/app/`, on the kind of
//! server it needs, dropped afterwards unless the test failed (so it can be
//! inspected). Tests run in parallel.
//!
//! - [`db`]: [`TestDb`] over a [`Server`] kind — `TestDb::new(tag)` on the
//!   plain test server, `TestDb::on(Server::Tls, tag)` on the TLS-only one,
//!   `Server::Replica` / `Server::ReplicaExclusive` on the replica set's
//!   primary, `Server::Pooler` behind the PgBouncers — with one create/drop
//!   path; what only one kind has (`tls()`, `replica_url()`,
//!   `transaction_url()`, `pause_replay()`, …) fails the test when asked of
//!   another kind;
//! - [`servers`]: the private servers of `scripts/pg-server` (TLS, replica
//!   set, poolers, node_exporter), started once per test process;
//! - [`process`]: relink and other child processes. Their stdout and stderr
//!   are always captured, never inherited, and their stdin is closed: what a
//!   child prints reaches `cargo test`'s output only in the message of a
//!   failing assertion, or — for a relink still running in the background
//!   ([`Spawned`]) when its test fails — from the guard's drop. The
//!   daemons (PostgreSQL, PgBouncer, node_exporter) log to files under
//!   `.pg/`; `scripts/pg-server`'s own diagnostics go to the captured output
//!   of the test that started the server;
//! - [`home`]: a `HOME` and environment of a test's own (libpq's files).

pub mod db;
pub mod home;
pub mod process;
pub mod servers;

pub use db::*;
pub use home::*;
pub use process::*;
pub use servers::*;
