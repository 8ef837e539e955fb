//! The one retry driver for every retried unit of work (a page read, a
//! chunk written, a purge chunk): which errors are worth another attempt
//! (SPEC §6: lost connections, lock and statement timeouts, serialization
//! failures), capped exponential backoff with jitter, and what a retryable
//! error means while the command is stopping (an interruption, not a
//! failure).

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use deadpool::managed::PoolError;
use tokio_postgres::error::SqlState;

use super::connect::ConnectError;

/// How a unit of work ended under [`Retry::run`] when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted<T> {
    Done(T),
    /// A retryable error while the command was stopping: the unit rolled
    /// back and is simply not done.
    Stopped,
}

/// Retry policy for one kind of unit: at most `attempts` tries.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    attempts: u32,
}

impl Retry {
    pub fn new(attempts: u32) -> Self {
        Self {
            attempts: attempts.max(1),
        }
    }

    /// Runs `unit` until it succeeds, fails with an error that is not worth
    /// retrying, runs out of attempts, or hits a retryable error while
    /// `stopping()` says the command is stopping. `unit` gets the attempt
    /// number (0 first), so a retry can check what a lost COMMIT did.
    ///
    /// # Errors
    /// The unit's last error, with how many attempts were made.
    pub async fn run<T, F, Fut>(
        &self,
        what: &str,
        stopping: impl Fn() -> bool,
        mut unit: F,
    ) -> Result<Attempted<T>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            let err = match unit(attempt).await {
                Ok(value) => return Ok(Attempted::Done(value)),
                Err(err) => err,
            };
            let give_up = |err: anyhow::Error| {
                err.context(format!("{what} failed after {} attempt(s)", attempt + 1))
            };
            if !is_retryable(&err) {
                return Err(give_up(err));
            }
            if stopping() {
                tracing::info!("{what}: rolled back while stopping: {err:#}");
                return Ok(Attempted::Stopped);
            }
            if attempt + 1 >= self.attempts {
                return Err(give_up(err));
            }
            let wait = backoff(attempt);
            attempt += 1;
            tracing::warn!(
                "{what}: {err:#}; retry {attempt}/{} in {wait:?}",
                self.attempts - 1
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether a failed unit is worth another try: a session the server ended
/// or lost (SPEC §6 "Sessions the server ends are replaced"), lock
/// timeouts, statement timeouts, serialization failures and deadlocks, and
/// a server that is restarting. Everything else (permissions, constraint
/// violations, bad SQL) fails at once. Decided by SQLSTATE (and the
/// connection's state), never by the words of a message.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg_retryable(pg);
        }
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            return connect.is_transient();
        }
        if let Some(pool) = cause.downcast_ref::<PoolError<ConnectError>>() {
            return match pool {
                PoolError::Backend(connect) => connect.is_transient(),
                PoolError::Timeout(_) => true,
                _ => false,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

/// SQLSTATE classes whose every code means "this session or statement was
/// ended from outside; a new one may succeed": `08` connection exception,
/// `57` operator intervention (`57014` a statement timeout or cancel,
/// `57P01` `pg_terminate_backend` or a fast shutdown, `57P02` a crash,
/// `57P03` a server still starting, `57P05` the idle-session timeout).
const RETRYABLE_CLASSES: [&str; 2] = ["08", "57"];

/// Single codes worth another try.
const RETRYABLE_CODES: [SqlState; 5] = [
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::T_R_DEADLOCK_DETECTED,
    // A lock wait given up: the lock phase's short wait (relink yields to
    // the application), or `--lock-timeout` on a table lock.
    SqlState::LOCK_NOT_AVAILABLE,
    // `idle_in_transaction_session_timeout` ended the session: relink was
    // stopped (Ctrl-Z, a paused VM) inside a chunk past `--idle-timeout`.
    SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
    SqlState::TOO_MANY_CONNECTIONS,
];

fn pg_retryable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => retryable_code(code),
        // No SQLSTATE: an I/O or protocol failure talking to the server.
        None => std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Whether an error with SQLSTATE `code` is worth another try.
fn retryable_code(code: &SqlState) -> bool {
    RETRYABLE_CODES.contains(code)
        || RETRYABLE_CLASSES.contains(&code.code().get(..2).unwrap_or_default())
}

/// Whether an error is a lock or statement timeout (a chunk too big for the
/// moment: chunk sizing shrinks).
pub fn is_timeout(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
    })
}

/// Whether an error is a permission problem (for a clearer message).
pub fn is_permission_denied(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|c| {
                *c == SqlState::INSUFFICIENT_PRIVILEGE || *c == SqlState::READ_ONLY_SQL_TRANSACTION
            })
    })
}

/// Capped exponential backoff with jitter: 200 ms, 400 ms, … up to 10 s,
/// each scaled by a random factor in [0.5, 1.0) so retrying workers spread out.
pub fn backoff(attempt: u32) -> Duration {
    let base_ms = 200u64.saturating_mul(1u64 << attempt.min(6)).min(10_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 500 + u64::from(nanos % 500);
    Duration::from_millis(base_ms * jitter / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn sessions_the_server_ends_are_retried_by_sqlstate() {
        for code in [
            "25P03", // idle_in_transaction_session_timeout
            "57P01", // pg_terminate_backend, fast shutdown
            "57P02", // crash shutdown
            "57P03", // cannot connect now
            "57P05", // idle_session_timeout
            "57014", // statement timeout
            "57000", // any other code of class 57
            "08006", // connection failure
            "08000", "40001", "40P01", "55P03", "53300",
        ] {
            assert!(retryable_code(&SqlState::from_code(code)), "{code}");
        }
        for code in [
            "23503", "23505", "42501", "42P01", "25P02", "25006", "XX000",
        ] {
            assert!(!retryable_code(&SqlState::from_code(code)), "{code}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            assert!(d >= Duration::from_millis(100), "{d:?}");
            assert!(d <= Duration::from_secs(10), "{d:?}");
        }
        assert!(backoff(6) > backoff(0));
    }

    fn retryable() -> anyhow::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_then_succeeds() {
        let calls = AtomicU32::new(0);
        let result = Retry::new(3)
            .run(
                "unit",
                || false,
                |attempt| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if attempt < 2 {
                            Err(retryable())
                        } else {
                            Ok(attempt)
                        }
                    }
                },
            )
            .await
            .expect("succeeds on the third attempt");
        assert_eq!(result, Attempted::Done(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_attempt_and_says_so() {
        let err = Retry::new(2)
            .run(
                "writing a chunk",
                || false,
                |_| async { Err::<(), _>(retryable()) },
            )
            .await
            .expect_err("fails");
        assert!(
            format!("{err:#}").contains("writing a chunk failed after 2 attempt(s)"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn other_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let err = Retry::new(5)
            .run(
                "unit",
                || false,
                |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(anyhow::anyhow!("permission denied")) }
                },
            )
            .await
            .expect_err("fails");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(format!("{err:#}").contains("after 1 attempt(s)"));
    }

    #[tokio::test]
    async fn a_retryable_error_while_stopping_is_an_interruption() {
        let result = Retry::new(5)
            .run("unit", || true, |_| async { Err::<(), _>(retryable()) })
            .await
            .expect("not a failure");
        assert_eq!(result, Attempted::Stopped);
    }
}
