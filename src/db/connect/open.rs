//! Opening one session the way libpq does, for single connections and for
//! the pool alike: the hosts in order, each with the TLS attempts its
//! `sslmode` implies, the password file read for a host only when its
//! server asks for a password, and `target_session_attrs` checked on the
//! session before it is handed out.
//!
//! relink's session settings (timeouts, time zone, read-only) go in the
//! startup packet's `options`, and every session is checked to have them.
//! A pooler may refuse that parameter (PgBouncer: "unsupported startup
//! parameter: options") or drop it (`ignore_startup_parameters = options`);
//! the settings are then applied with `set_config` after connecting — but
//! only once [`crate::db::pooler::probe`] has found that the connection
//! keeps a server session of its own: behind a transaction pooler a session
//! setting would stay on a server session the application gets next, so
//! the connection is refused instead.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, SimpleQueryMessage, Socket};

use super::diagnose::{self, Failure, Problem, Stage};
use super::startup::{quote_literal, SessionOptions};
use super::{ConnInfo, Origin, Password, Target, TargetSessionAttrs};
use crate::db::pooler::{self, Pooling};
use crate::db::tls::{make_tls_connect, MakeRustlsConnect, TlsError};

/// Why one host could not be used.
#[derive(Debug)]
pub struct HostFailure {
    /// `host:port` tried.
    pub target: String,
    pub problem: Problem,
    /// The driver's error, when there is one.
    pub source: Option<tokio_postgres::Error>,
    /// The driver's error says the server could not be reached, or cannot
    /// take a session now (see [`Failure::next_host`]).
    pub next_host: bool,
}

impl fmt::Display for HostFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.problem)
    }
}

/// A session could not be opened. `Display` gives cause and fix for each
/// host tried, never the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS configuration (certificate or key files) cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Every host tried failed; libpq stops at the first failure that is
    /// not about reaching the server, so the list may be shorter than the
    /// host list.
    #[error("cannot connect to {url}: {}", failures_text(.failures))]
    Failed {
        /// The redacted URL.
        url: String,
        failures: Vec<HostFailure>,
    },
}

fn failures_text(failures: &[HostFailure]) -> String {
    match failures {
        [one] => one.problem.to_string(),
        many => many
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

impl ConnectError {
    /// Whether trying again later may succeed without a configuration
    /// change: no host could be reached or answered in time, none was of
    /// the wanted kind yet, or the server was starting up or shutting down
    /// (a failover or restart in progress). Authentication, TLS and
    /// configuration failures are not transient.
    pub fn is_transient(&self) -> bool {
        let Self::Failed { failures, .. } = self else {
            return false;
        };
        failures.last().is_some_and(|last| {
            matches!(
                last.problem,
                Problem::Unreachable { .. }
                    | Problem::Timeout { .. }
                    | Problem::WrongSessionKind { .. }
                    // A failover in progress: the standby may be promoted.
                    | Problem::StandbyForWrites
            ) || last.next_host
        })
    }

    /// The classified problem of the last host tried.
    pub fn last_problem(&self) -> Option<&Problem> {
        match self {
            Self::Tls(_) => None,
            Self::Failed { failures, .. } => failures.last().map(|f| &f.problem),
        }
    }
}

/// Opens sessions for one [`ConnInfo`]; cheap to clone, shared by the
/// single connections and the pool (whose manager it builds).
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    info: ConnInfo,
    session: SessionOptions,
    tls: MakeRustlsConnect,
    /// Passwords found in the password file, by target index, so the pool's
    /// later connections send them at once instead of first being asked.
    found: Mutex<HashMap<usize, (Password, Origin)>>,
    /// A server refused the `options` startup parameter: later sessions
    /// go without it (and get relink's settings with `set_config`).
    options_refused: AtomicBool,
    /// The pooler check's verdict, made once, by the first session whose
    /// settings must be set after connecting.
    pooling: OnceCell<Pooling>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("info", &self.inner.info)
            .field("session", &self.inner.session)
            .finish_non_exhaustive()
    }
}

/// What a session is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A session of relink's: its settings, checked, and the kind of
    /// server `target_session_attrs` asks for.
    Relink,
    /// The pooler check's second connection: no settings (not safe before
    /// the verdict), no checks.
    Bare,
}

/// How one attempt ended, short of a session.
enum Attempt {
    /// With the server's `in_hot_standby` report, if it made one.
    Connected(Client, JoinHandle<()>, Option<bool>),
    Failed(tokio_postgres::Error, Stage),
    TimedOut(Duration),
}

impl Connector {
    /// Reads the certificate and key files `info` names (once, here) and
    /// prepares the TLS connector.
    ///
    /// # Errors
    /// When a certificate or key file cannot be used.
    pub fn new(info: ConnInfo, session: SessionOptions) -> Result<Self, TlsError> {
        let tls = make_tls_connect(&info.tls())?;
        Ok(Self {
            inner: Arc::new(Inner {
                info,
                session,
                tls,
                found: Mutex::new(HashMap::new()),
                options_refused: AtomicBool::new(false),
                pooling: OnceCell::new(),
            }),
        })
    }

    pub fn info(&self) -> &ConnInfo {
        &self.inner.info
    }

    /// The TLS connector (for `tokio_postgres::Config::connect` or
    /// `deadpool_postgres::Manager::from_config` if ever needed directly).
    pub fn tls(&self) -> &MakeRustlsConnect {
        &self.inner.tls
    }

    /// Opens one session, libpq's way: hosts in order; on a host, the TLS
    /// attempts of its `sslmode`; a password from the connection string or
    /// `PGPASSWORD`, else — only once the server asks — from the password
    /// file; then the `target_session_attrs` check (`prefer-standby`: a
    /// standby if any host is one, else any host). The connection's task is
    /// spawned on the current tokio runtime; its handle is returned.
    ///
    /// # Errors
    /// [`ConnectError`], with cause and fix for each host tried.
    pub async fn connect(&self) -> Result<(Client, JoinHandle<()>), ConnectError> {
        self.open(Purpose::Relink).await
    }

    /// A session with none of relink's settings and no checks: the pooler
    /// check's second connection (see [`pooler::probe`]).
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub async fn connect_bare(&self) -> Result<(Client, JoinHandle<()>), ConnectError> {
        self.open(Purpose::Bare).await
    }

    async fn open(&self, purpose: Purpose) -> Result<(Client, JoinHandle<()>), ConnectError> {
        let info = &self.inner.info;
        let passes = match info.target_session_attrs {
            TargetSessionAttrs::PreferStandby => {
                vec![TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            }
            other => vec![other],
        };
        let mut failures = Vec::new();
        for wanted in passes {
            for (index, target) in info.targets.iter().enumerate() {
                let wanted = match purpose {
                    Purpose::Relink => Some(wanted),
                    Purpose::Bare => None,
                };
                match self.connect_target(index, target, wanted).await {
                    Ok(session) => return Ok(session),
                    Err((failure, go_on)) => {
                        tracing::debug!("connection to {failure}");
                        failures.push(failure);
                        if !go_on {
                            return Err(self.failed(failures));
                        }
                    }
                }
            }
        }
        Err(self.failed(failures))
    }

    fn failed(&self, failures: Vec<HostFailure>) -> ConnectError {
        ConnectError::Failed {
            url: self.inner.info.to_string(),
            failures,
        }
    }

    /// One host: its TLS attempts, the password when asked for, the session
    /// check (with `wanted`; none for a bare session). On failure, also
    /// whether to go on to the next host.
    async fn connect_target(
        &self,
        index: usize,
        target: &Target,
        wanted: Option<TargetSessionAttrs>,
    ) -> Result<(Client, JoinHandle<()>), (HostFailure, bool)> {
        let info = &self.inner.info;
        let fail =
            |problem: Problem, source: Option<(tokio_postgres::Error, Stage)>, go_on: bool| {
                let next_host = source
                    .as_ref()
                    .is_some_and(|(err, stage)| Failure::of(err, *stage).next_host());
                (
                    HostFailure {
                        target: target.to_string(),
                        problem,
                        source: source.map(|(err, _)| err),
                        next_host,
                    },
                    go_on,
                )
            };
        let mut password = info
            .given_password()
            .map(|(p, s)| (p.clone(), s.clone()))
            .or_else(|| self.cached_password(index));
        let modes = info.tls_attempts(target);
        let mut mode_index = 0;
        loop {
            let mode = modes[mode_index];
            let has_more_modes = mode_index + 1 < modes.len();
            let bare = wanted.is_none();
            let err = match self
                .attempt(target, mode, password.as_ref().map(|p| &p.0), bare)
                .await
            {
                Attempt::Connected(client, task, _) if bare => return Ok((client, task)),
                Attempt::Connected(client, task, standby) => {
                    let wanted = wanted.unwrap_or(TargetSessionAttrs::Any);
                    let session = &self.inner.session;
                    let checking = check_session(
                        &client,
                        wanted,
                        session.read_only,
                        standby,
                        session.a_setting(),
                    );
                    // The check is part of the attempt, which libpq's
                    // connect_timeout bounds as a whole: a server that lets
                    // us in and then never answers must not hang us.
                    let checked = match info.connect_timeout {
                        Some(limit) => match tokio::time::timeout(limit, checking).await {
                            Ok(checked) => checked,
                            Err(_) => {
                                return Err(fail(Problem::Timeout { after: limit }, None, true))
                            }
                        },
                        None => checking.await,
                    };
                    return match checked {
                        Ok(Verdict::Suits) => Ok((client, task)),
                        Ok(Verdict::SuitsWithoutSettings) => {
                            match self.set_settings(index, target, &client).await {
                                Ok(()) => Ok((client, task)),
                                Err((problem, err)) => Err(fail(
                                    problem,
                                    err.map(|err| (err, Stage::CONNECTED)),
                                    false,
                                )),
                            }
                        }
                        Ok(Verdict::WrongKind) => {
                            Err(fail(Problem::WrongSessionKind { wanted }, None, true))
                        }
                        // libpq would hand the standby out under
                        // target_session_attrs=any (it is the first host
                        // that answered), so the next host is not tried;
                        // the message names the fix.
                        Ok(Verdict::StandbyForWrites) => {
                            Err(fail(Problem::StandbyForWrites, None, false))
                        }
                        Err(err) => {
                            let stage = Stage::CONNECTED;
                            let problem = diagnose::diagnose(&err, stage, info, target, None);
                            Err(fail(problem, Some((err, stage)), true))
                        }
                    };
                }
                Attempt::TimedOut(after) => {
                    return Err(fail(Problem::Timeout { after }, None, true));
                }
                Attempt::Failed(err, stage) => (err, stage),
            };
            let (err, stage) = err;
            let failure = Failure::of(&err, stage);
            if !bare && self.refuses_options(&err) {
                if info.options.is_some() {
                    // Settings of the operator's that relink cannot apply
                    // for them: say so rather than drop them.
                    let problem = Problem::OptionsRefused {
                        detail: diagnose::chain_text(&err),
                    };
                    return Err(fail(problem, Some((err, stage)), false));
                }
                tracing::debug!(
                    "{target} refused the options startup parameter ({}): a connection pooler? \
                     connecting without it",
                    diagnose::chain_text(&err)
                );
                self.inner.options_refused.store(true, Ordering::SeqCst);
                continue;
            }
            if password.is_none() && matches!(failure, Failure::PasswordMissing) {
                match info.password_for(target) {
                    Ok(Some(found)) => {
                        self.remember_password(index, &found);
                        password = Some(found);
                        continue;
                    }
                    Ok(None) => {}
                    Err(refused) => {
                        let problem = Problem::PasswordFile {
                            message: refused.to_string(),
                        };
                        return Err(fail(problem, Some((err, stage)), false));
                    }
                }
            }
            let falls_back = match mode {
                PgSslMode::Prefer => failure.prefer_falls_back(),
                PgSslMode::Disable => failure.allow_falls_back(),
                _ => false,
            };
            if has_more_modes && falls_back {
                tracing::debug!(
                    "{target}: {} failed ({}); trying the next sslmode step",
                    ssl_name(mode),
                    diagnose::chain_text(&err)
                );
                mode_index += 1;
                continue;
            }
            let go_on = failure.next_host();
            let source = password.as_ref().map(|p| &p.1);
            let problem = diagnose::diagnose(&err, stage, info, target, source);
            if matches!(problem, Problem::PasswordWrong { .. }) {
                // The file may have been corrected since: read it afresh
                // next time.
                self.forget_password(index);
            }
            return Err(fail(problem, Some((err, stage)), go_on));
        }
    }

    /// One connection attempt, bounded as a whole by `connect_timeout`
    /// (tokio-postgres bounds only the TCP connect; libpq bounds the whole
    /// attempt, so a server that accepts and never answers cannot hang us).
    async fn attempt(
        &self,
        target: &Target,
        mode: PgSslMode,
        password: Option<&Password>,
        bare: bool,
    ) -> Attempt {
        let info = &self.inner.info;
        let session = &self.inner.session;
        let without_options = bare || self.inner.options_refused.load(Ordering::SeqCst);
        let mut config = if without_options {
            info.config_without_options(target, mode)
        } else {
            info.config_for(target, mode)
        };
        if let Some(password) = password {
            config.password(password.expose());
        }
        if info.application_name.is_none() {
            if let Some(name) = &session.application_name {
                config.application_name(name);
            }
        }
        if !without_options {
            if let Some(options) = session.options(info.options.as_deref()) {
                config.options(options);
            }
        }
        let record = Arc::new(TlsRecord::default());
        let tls = RecordingTls {
            inner: self.inner.tls.clone(),
            record: Arc::clone(&record),
        };
        let connecting = config.connect(tls);
        let result = match info.connect_timeout {
            Some(limit) => match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result,
                Err(_) => return Attempt::TimedOut(limit),
            },
            None => connecting.await,
        };
        match result {
            Ok((client, connection)) => {
                // PostgreSQL 14+ reports it at startup (libpq 14+ reads it
                // too); older servers do not.
                let standby = connection.parameter("in_hot_standby").map(|v| v == "on");
                let task = tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!("connection closed: {err}");
                    }
                });
                Attempt::Connected(client, task, standby)
            }
            Err(err) => Attempt::Failed(
                err,
                Stage {
                    tls_required: mode == PgSslMode::Require,
                    tls_started: record.started.load(Ordering::SeqCst),
                    tls_failed: record.failed.load(Ordering::SeqCst),
                    password_sent: password.is_some(),
                },
            ),
        }
    }

    /// Whether `err` is a server refusing relink's `options` startup
    /// parameter: a protocol violation or an unsupported feature at startup
    /// (PgBouncer: 08P01 "unsupported startup parameter: options"), when
    /// relink sent one. The next attempt goes without it; a server that
    /// refused for another reason refuses that attempt too.
    fn refuses_options(&self, err: &tokio_postgres::Error) -> bool {
        let sent = !self.inner.options_refused.load(Ordering::SeqCst)
            && self
                .inner
                .session
                .options(self.inner.info.options.as_deref())
                .is_some();
        sent && err.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::PROTOCOL_VIOLATION
                || *db.code() == SqlState::FEATURE_NOT_SUPPORTED
        })
    }

    /// Applies relink's settings to a session that did not get them at
    /// startup, once the pooler check (made once per connector) has found
    /// that sessions keep a server session of their own.
    async fn set_settings(
        &self,
        index: usize,
        target: &Target,
        client: &Client,
    ) -> Result<(), (Problem, Option<tokio_postgres::Error>)> {
        let server = target.to_string();
        let pooling = self
            .inner
            .pooling
            .get_or_try_init(|| {
                pooler::probe(client, &server, || async {
                    let (other, _task) = self.connect_bare_to(index, target).await?;
                    Ok(other)
                })
            })
            .await
            .map_err(|err| {
                (
                    Problem::Server {
                        detail: format!("{err:#}"),
                    },
                    None,
                )
            })?;
        if let Pooling::Transaction(pooler) = pooling {
            return Err((
                Problem::TransactionPooler {
                    message: pooler.to_string(),
                },
                None,
            ));
        }
        tracing::debug!(
            "{target} does not apply relink's startup options (a session pooler): setting them"
        );
        client
            .simple_query(&self.inner.session.set_config_sql())
            .await
            .map(drop)
            .map_err(|err| {
                (
                    Problem::Server {
                        detail: format!(
                            "cannot apply relink's session settings: {}",
                            diagnose::chain_text(&err)
                        ),
                    },
                    Some(err),
                )
            })
    }

    /// A bare session on target `index` (the pooler check's second
    /// connection reaches the same host as the first).
    async fn connect_bare_to(
        &self,
        index: usize,
        target: &Target,
    ) -> anyhow::Result<(Client, JoinHandle<()>)> {
        // Boxed: connect_target reaches here through set_settings.
        Box::pin(self.connect_target(index, target, None))
            .await
            .map_err(|(failure, _)| anyhow::anyhow!("{failure}"))
    }

    /// The passwords found so far. A panic while the lock was held cannot
    /// have left the map half-changed (each use is one insert, remove or
    /// clone), so a poisoned lock is taken over as it is.
    fn found(&self) -> MutexGuard<'_, HashMap<usize, (Password, Origin)>> {
        self.inner
            .found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn cached_password(&self, index: usize) -> Option<(Password, Origin)> {
        self.found().get(&index).cloned()
    }

    fn forget_password(&self, index: usize) {
        self.found().remove(&index);
    }

    fn remember_password(&self, index: usize, password: &(Password, Origin)) {
        self.found().insert(index, password.clone());
    }
}

/// How far one attempt's TLS got, recorded by [`RecordingTls`].
#[derive(Debug, Default)]
struct TlsRecord {
    /// The server accepted the TLS request: the handshake began.
    started: AtomicBool,
    /// The handshake failed.
    failed: AtomicBool,
}

/// The TLS connector of one attempt, recording how far TLS got so that a
/// failure is told apart by what happened (see [`Stage`]).
#[derive(Clone)]
struct RecordingTls {
    inner: MakeRustlsConnect,
    record: Arc<TlsRecord>,
}

type RustlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;

impl MakeTlsConnect<Socket> for RecordingTls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = RecordingConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RecordingConnect, Self::Error> {
        Ok(RecordingConnect {
            inner: <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(
                &mut self.inner,
                domain,
            )?,
            record: Arc::clone(&self.record),
        })
    }
}

/// See [`RecordingTls`].
struct RecordingConnect {
    inner: RustlsConnect,
    record: Arc<TlsRecord>,
}

impl TlsConnect<Socket> for RecordingConnect {
    type Stream = <RustlsConnect as TlsConnect<Socket>>::Stream;
    type Error = <RustlsConnect as TlsConnect<Socket>>::Error;
    type Future = BoxFuture<'static, Result<Self::Stream, Self::Error>>;

    fn connect(self, stream: Socket) -> Self::Future {
        self.record.started.store(true, Ordering::SeqCst);
        let record = self.record;
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            let result = handshake.await;
            if result.is_err() {
                record.failed.store(true, Ordering::SeqCst);
            }
            result
        })
    }
}

/// What [`check_session`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Suits,
    /// Suits, but relink's startup options are not in force (a pooler
    /// refused or dropped them).
    SuitsWithoutSettings,
    /// Not the kind `target_session_attrs` asks for: try the next host.
    WrongKind,
    /// A standby (in recovery), and relink means to write on this session.
    StandbyForWrites,
}

/// Whether the session suits `wanted` (libpq's checks; PostgreSQL 14+
/// libpq reads the same two facts from the server's startup report), for
/// a session relink writes on that the server is not a standby, and when
/// relink sent settings (`expects_settings`) that they are in force.
///
/// The standby check is relink's own: a writing command (run, purge, pause)
/// connected to a hot standby — the first host of a list under
/// `target_session_attrs=any`, or a replica's address — would otherwise
/// fail at its first write with a misleading "permission denied … read-only
/// transaction". Under `any`, without settings to check, it costs nothing:
/// it reads the server's startup report `in_hot_standby` (`standby`;
/// PostgreSQL 14+), and is skipped when a server does not send one.
///
/// Settings given at startup show `client` as their source in
/// `pg_settings`; `setting`, one of relink's, stands for all of them, since
/// they come in one parameter, in force or not as a whole. The query is one
/// simple-protocol message: it works through any pooler.
async fn check_session(
    client: &Client,
    wanted: TargetSessionAttrs,
    relink_read_only: bool,
    standby: Option<bool>,
    setting: Option<&str>,
) -> Result<Verdict, tokio_postgres::Error> {
    let expects_settings = setting.is_some();
    if wanted == TargetSessionAttrs::Any && !expects_settings {
        return Ok(if standby == Some(true) && !relink_read_only {
            Verdict::StandbyForWrites
        } else {
            Verdict::Suits
        });
    }
    let messages = client
        .simple_query(&format!(
            "SELECT pg_catalog.pg_is_in_recovery(), \
                    pg_catalog.current_setting('transaction_read_only') = 'on', \
                    coalesce((SELECT s.source = 'client' FROM pg_catalog.pg_settings s \
                               WHERE lower(s.name) = lower({})), false)",
            quote_literal(setting.unwrap_or(""))
        ))
        .await?;
    let flag = |i: usize| {
        messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(i) == Some("t")),
            _ => None,
        })
    };
    let in_recovery = flag(0).unwrap_or(false);
    let read_only = flag(1).unwrap_or(false);
    let settings_in_force = flag(2).unwrap_or(false) || !expects_settings;
    // A read-only session that relink asked for says nothing about the
    // server: judge read-write by recovery alone then. (Without relink's
    // settings in force, the session is not read-only by relink's doing.)
    let refuses_writes = in_recovery || (read_only && !(relink_read_only && settings_in_force));
    let suits = match wanted {
        TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => true,
        TargetSessionAttrs::ReadWrite => !refuses_writes,
        TargetSessionAttrs::ReadOnly => in_recovery || read_only,
        TargetSessionAttrs::Primary => !in_recovery,
        TargetSessionAttrs::Standby => in_recovery,
    };
    Ok(if !suits {
        Verdict::WrongKind
    } else if in_recovery && !relink_read_only {
        Verdict::StandbyForWrites
    } else if !settings_in_force {
        Verdict::SuitsWithoutSettings
    } else {
        Verdict::Suits
    })
}

fn ssl_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "plaintext",
        PgSslMode::Prefer => "TLS if offered",
        _ => "TLS",
    }
}

#[cfg(test)]
mod tests;
