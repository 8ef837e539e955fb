//! The gates that ask the databases before each chunk (SPEC §13): an
//! operator's `relink pause`, replica lag, and `--throttle-query`. Each
//! has its own session, opened at start (where any problem is fatal: a
//! role that cannot read replica lag, an unreachable `--replica`, a
//! throttle query that fails) and reopened as needed mid-run (where a
//! problem holds the chunk: relink never proceeds blind).

use anyhow::{Context as _, Result};
use tokio::time::Instant;
use tokio_postgres::Client;

use super::replica::{self, Lag, Tracker};
use super::Cause;
use crate::config::{GateConfig, Names};
use crate::db::{self, Database, Session};
use crate::state;

/// Why the next chunk must wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub cause: Cause,
    /// For the log, the progress line and `status`.
    pub reason: String,
}

/// A session that is reopened when it was lost.
struct Conn {
    db: Database,
    session: Session,
    client: Option<Client>,
}

impl Conn {
    fn new(db: Database, session: Session) -> Self {
        Self {
            db,
            session,
            client: None,
        }
    }

    async fn get(&mut self) -> Result<&Client> {
        if !self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            self.client = Some(db::connect(&self.db, &self.session).await?);
        }
        self.client.as_ref().context("no connection")
    }

    /// Forgets the connection after an error, so the next check reconnects.
    fn reset(&mut self) {
        self.client = None;
    }
}

/// The database-backed gates of one command.
pub struct Watch {
    names: Names,
    gates: GateConfig,
    /// On the primary: the pause flag, `pg_stat_replication`, the run's
    /// `waiting` column.
    primary: Conn,
    /// One per `--replica`, with the name it goes by in messages.
    replicas: Vec<(String, Conn)>,
    /// Its own read-only session (SPEC §13).
    query: Option<Conn>,
    tracker: Tracker,
    /// The run whose `waiting` column shows the hold; and what it shows.
    run_id: Option<i64>,
    shown: Option<String>,
}

impl Watch {
    /// Opens the gates' sessions (on `db`, and on each of `replicas`: the
    /// gates' `--replica`s, resolved) and checks each gate once.
    ///
    /// # Errors
    /// When a gate cannot be checked: relink does not start blind.
    pub async fn open(
        db: &Database,
        replicas: &[Database],
        session: &Session,
        names: &Names,
        gates: &GateConfig,
    ) -> Result<Self> {
        let primary = Conn::new(db.clone(), session.named("watch"));
        let replicas = replicas
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    Conn::new(r.clone(), session.named("watch").read_only()),
                )
            })
            .collect();
        let query = gates
            .throttle_query
            .as_ref()
            .map(|_| Conn::new(db.clone(), session.named("throttle-query").read_only()));
        let mut watch = Self {
            names: names.clone(),
            gates: gates.clone(),
            primary,
            replicas,
            query,
            tracker: Tracker::default(),
            run_id: None,
            shown: None,
        };
        watch.replica_lag().await?;
        watch
            .throttle_query()
            .await
            .context("--throttle-query failed; fix the query (it runs before each chunk on a read-only session; its first column true means wait)")?;
        Ok(watch)
    }

    /// Shows holds on run `id` for `status`.
    pub fn show_on(&mut self, id: i64) {
        self.run_id = Some(id);
    }

    /// Checks every gate in turn: the first that holds, if any. A gate that
    /// cannot be checked holds too, saying why.
    pub async fn check(&mut self) -> Option<Hold> {
        let hold = self.first_hold().await;
        let shown = hold.as_ref().map(|h| h.reason.clone());
        if shown != self.shown {
            if let Some(id) = self.run_id {
                let recorded = match self.primary.get().await {
                    Ok(client) => {
                        state::set_waiting(client, &self.names, id, shown.as_deref()).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = recorded {
                    tracing::debug!("cannot show the hold on run {id}: {e:#}");
                    self.primary.reset();
                }
            }
            self.shown = shown;
        }
        hold
    }

    async fn first_hold(&mut self) -> Option<Hold> {
        match self.pause().await {
            Ok(None) => {}
            Ok(Some(reason)) => return Some(hold(Cause::Pause, reason)),
            Err(e) => {
                self.primary.reset();
                return Some(hold(
                    Cause::Pause,
                    format!("cannot read the pause flag ({e:#}); retrying"),
                ));
            }
        }
        match self.replica_lag().await {
            Ok(None) => {}
            Ok(Some(lag)) => {
                let limit = self.gates.max_replica_lag.unwrap_or_default();
                return Some(hold(
                    Cause::ReplicaLag,
                    format!("{} (limit {:.1} s)", lag.describe(), limit.as_secs_f64()),
                ));
            }
            Err(e) => {
                return Some(hold(
                    Cause::ReplicaLag,
                    format!("cannot read replica lag ({e:#}); not proceeding blind, retrying"),
                ))
            }
        }
        match self.throttle_query().await {
            Ok(false) => None,
            Ok(true) => Some(hold(
                Cause::ThrottleQuery,
                "--throttle-query answered true".to_owned(),
            )),
            Err(e) => Some(hold(
                Cause::ThrottleQuery,
                format!("--throttle-query failed ({e:#}); retrying"),
            )),
        }
    }

    /// The pause in force, described.
    async fn pause(&mut self) -> Result<Option<String>> {
        let client = self.primary.get().await?;
        Ok(state::current_pause(client, &self.names).await?.map(|p| {
            format!(
                "paused by {} since {}{}; `relink resume` lifts it",
                p.paused_by,
                p.paused_at,
                p.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            )
        }))
    }

    /// The most lagging replica over the limit, if any.
    async fn replica_lag(&mut self) -> Result<Option<Lag>> {
        let Some(limit) = self.gates.max_replica_lag else {
            return Ok(None);
        };
        let mut samples = match self.primary.get().await {
            Ok(client) => replica::primary_samples(client).await,
            Err(e) => Err(e),
        }
        .inspect_err(|_| self.primary.reset())?;
        for (name, conn) in &mut self.replicas {
            let sample = match conn.get().await {
                Ok(client) => replica::replica_sample(client, name).await,
                Err(e) => Err(e),
            }
            .inspect_err(|_| conn.reset())
            .with_context(|| format!("cannot reach replica {name} (given with --replica)"))?;
            samples.push(sample);
        }
        let now = Instant::now();
        let worst = samples
            .iter()
            .map(|s| self.tracker.judge(s, now))
            .max_by_key(|l| l.lag);
        Ok(worst.filter(|l| l.lag > limit))
    }

    /// Whether `--throttle-query` says wait.
    async fn throttle_query(&mut self) -> Result<bool> {
        let (Some(conn), Some(sql)) = (&mut self.query, &self.gates.throttle_query) else {
            return Ok(false);
        };
        let answer = match conn.get().await {
            // The first row's first column; no row or NULL is false.
            Ok(client) => client
                .query(sql.as_str(), &[])
                .await
                .map_err(anyhow::Error::from)
                .and_then(|rows| match rows.first() {
                    None => Ok(false),
                    Some(row) => row
                        .try_get::<_, Option<bool>>(0)
                        .map(|b| b.unwrap_or(false))
                        .context("its first column must be a boolean"),
                }),
            Err(e) => Err(e),
        };
        answer.inspect_err(|_| conn.reset())
    }
}

fn hold(cause: Cause, reason: String) -> Hold {
    Hold { cause, reason }
}
