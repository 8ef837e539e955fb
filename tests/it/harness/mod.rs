//! Test harness against real servers: each test gets its own freshly
//! created database with the app schema from `sql/app/`, on the kind of
//! server it needs ([`Server`]: the plain test server, the TLS-only one, the
//! replica set's primary, the server behind the PgBouncers), dropped
//! afterwards unless the test failed (so it can be inspected). Tests run in
//! parallel.
//!
//! - [`db`]: [`TestDb`] over a [`Server`], its create/drop path and queries;
//! - [`servers`]: the private servers of `scripts/pg-server` (TLS, replica
//!   set, poolers, node_exporter), started once per test process;
//! - [`process`]: relink and other child processes, their output captured
//!   (never mixed into `cargo test`'s) and shown when a test fails;
//! - [`home`]: a `HOME` and environment of a test's own (libpq's files).

pub mod db;
pub mod home;
pub mod process;
pub mod servers;

pub use db::*;
pub use home::*;
pub use process::*;
pub use servers::*;
