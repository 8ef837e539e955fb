//! The pool of relink's sessions: deadpool with a manager of relink's own,
//! whose sessions a [`Connector`] opens.

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;

use super::open::{ConnectError, Connector};

/// The pool of relink's sessions (chunk writers, readers).
pub type Pool = deadpool::managed::Pool<PoolManager>;

/// A session of the [`Pool`]: derefs to deadpool-postgres's client (with
/// its statement cache and `transaction`), and so to tokio-postgres's.
pub type PooledClient = deadpool::managed::Object<PoolManager>;

/// The pool's [`deadpool::managed::Manager`]: sessions opened by a
/// [`Connector`], so a failure reaches the pool's caller as the
/// [`ConnectError`] with its cause and fix (deadpool-postgres's own
/// manager wants a driver error, which a TLS or password-file problem does
/// not have).
#[derive(Debug)]
pub struct PoolManager(Connector);

impl PoolManager {
    /// Its connections are opened by [`Connector::connect`], so the pool
    /// follows the same hosts, TLS, password and session rules (after a
    /// failover, new pool connections find the new primary).
    pub fn new(connector: Connector) -> Self {
        Self(connector)
    }
}

impl deadpool::managed::Manager for PoolManager {
    type Type = ClientWrapper;
    type Error = ConnectError;

    async fn create(&self) -> Result<ClientWrapper, ConnectError> {
        let (client, task) = self.0.connect().await?;
        Ok(ClientWrapper::new(client, task))
    }

    /// deadpool-postgres's `RecyclingMethod::Fast`: a session the server
    /// closed is replaced; any other is handed out again as it is.
    async fn recycle(
        &self,
        client: &mut ClientWrapper,
        _: &Metrics,
    ) -> RecycleResult<ConnectError> {
        if client.is_closed() {
            return Err(RecycleError::message("the server closed the session"));
        }
        Ok(())
    }
}
