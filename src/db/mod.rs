//! The database edge's mechanics, shared by every command: where to
//! connect (`database`), connection parameters as libpq reads them
//! (`conninfo`), TLS and connecting
//! (`tls`), session settings and the pool (`session`), the one retry driver (`retry`), the one keyset pager
//! (`pager`), the advisory lock and its keeper (`lock`), the checks
//! made before any work (`preflight`), and the server's WAL position
//! (`wal`).

pub mod conninfo;
pub mod database;
pub mod lock;
pub mod pager;
pub mod pooler;
pub mod preflight;
pub mod retry;
pub mod session;
pub mod tls;
pub mod wal;

pub use database::Database;
pub use lock::{LockGuard, LockHeld};
pub use pager::{Keyset, Pager};
pub use retry::{is_permission_denied, is_retryable, is_timeout, Attempted, Retry};
pub use session::{checkout, connect, pool, Owner, Session};
