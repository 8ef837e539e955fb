//! The one retry driver for every retried unit of work (a page read, a
//! chunk written, a purge chunk): which errors are worth another attempt
//! (SPEC §6: lost connections, lock and statement timeouts, serialization
//! failures), capped exponential backoff with jitter, and what a retryable
//! error means while the command is stopping (an interruption, not a
//! failure).

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio_postgres::error::SqlState;

use super::tls::ConnectError;

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

/// Whether a failed unit is worth another try: lost connections, lock
/// timeouts, statement timeouts, serialization failures and deadlocks, a
/// server that is restarting, and a row the application deleted under a
/// chunk. Everything else (permissions, constraint
/// violations, bad SQL) fails at once.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg_retryable(pg);
        }
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            return connect.is_transient();
        }
        if let Some(pool) = cause.downcast_ref::<deadpool_postgres::PoolError>() {
            return match pool {
                deadpool_postgres::PoolError::Backend(pg) => pg_retryable(pg),
                deadpool_postgres::PoolError::Timeout(_) => true,
                _ => false,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

fn pg_retryable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => {
            [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::QUERY_CANCELED,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                // A chunk's profile or user deleted by the application since
                // the chunk was read: its rows' foreign key fails, and the
                // retry leaves that profile out (`sink::commit_chunk`).
                SqlState::FOREIGN_KEY_VIOLATION,
            ]
            .contains(code)
                || code.code().starts_with("08")
        }
        // No SQLSTATE: an I/O or protocol failure talking to the server.
        None => std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>()),
    }
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
