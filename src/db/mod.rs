//! The database edge's mechanics, shared by every command: where to
//! connect (`database`), how, as libpq reads it, and opening sessions that
//! way (`connect`), TLS (`tls`), passwords kept out of logs (`secret`),
//! session settings and the pool (`session`), the one retry driver
//! (`retry`), the one keyset pager (`pager`), the advisory lock and its
//! keeper (`lock`), connection poolers (`pooler`), the checks made before
//! any work (`preflight`), and the server's WAL position (`wal`).
//!
//! `connect` uses `tls`, never the other way round: TLS gets the TLS
//! parameters only ([`tls::TlsParams`]), so it can be read, tested and
//! changed without the rest of libpq's connection rules.

pub mod connect;
pub mod database;
pub mod lock;
pub mod pager;
pub mod pooler;
pub mod preflight;
pub mod retry;
pub mod secret;
pub mod session;
pub mod tls;
pub mod wal;

pub use connect::{Pool, PooledClient};
pub use database::Database;
pub use lock::{LockGuard, LockHeld};
pub use pager::{Keyset, Pager};
pub use retry::{is_permission_denied, is_retryable, is_timeout, Attempted, Retry};
pub use session::{checkout, connect, pool, Owner, Session};
