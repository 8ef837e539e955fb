//! The server's WAL position, for the WAL a run made it write (SPEC §11:
//! `wal_bytes` in the summary and `relink_wal_bytes` in the metrics file).
//! It is the whole server's position: WAL that other sessions write while
//! relink runs counts too.

use tokio_postgres::GenericClient;

/// Where the server's WAL stands, in bytes from its start; `None` when the
/// server cannot say (a hot standby, a role the function is revoked from),
/// which costs the figure but never the run.
pub async fn position(client: &impl GenericClient) -> Option<u64> {
    match client
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
        .await
    {
        Ok(row) => u64::try_from(row.get::<_, i64>(0)).ok(),
        Err(err) => {
            tracing::debug!("cannot read the server's WAL position: {err}");
            None
        }
    }
}

/// Bytes of WAL written since `start` (a [`position`]).
pub async fn since(client: &impl GenericClient, start: Option<u64>) -> Option<u64> {
    Some(position(client).await?.saturating_sub(start?))
}
