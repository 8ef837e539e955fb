//! Where and how to connect, resolved the way libpq (and so `psql`) does it,
//! and opening sessions that way.
//!
//! Resolving (no network I/O) turns a URL or `key=value` string
//! (`params`), a connection service file's parameters (`service=`,
//! `PGSERVICE`; `service`) for whatever the string leaves out, libpq's
//! environment variables for what is still unset (`env`), libpq's built-in
//! defaults, the host list (`hosts`) and the certificate and revocation
//! files under `~/.postgresql/` into one validated [`ConnInfo`]
//! (`resolve`); every value keeps its [`Origin`] for messages. The password
//! file (`pgpass`) is read per host at connect time
//! ([`ConnInfo::password_for`]). Opening a session (`open`: hosts in order,
//! `sslmode` fallbacks, `target_session_attrs`; relink's session settings
//! in `startup`; the pool's manager in `pool`) and saying why one could
//! not be opened (`diagnose`) come last; TLS itself is [`super::tls`]'s.
//!
//! The connection-string parser, the service-file and password-file
//! readers are written here by hand on purpose: relink must accept exactly
//! what libpq accepts, with libpq's precedence and quirks (a later keyword
//! wins, `\` escapes and `'…'` quoting in `key=value` strings, `*` only as
//! a whole password-file field, the first line of a service's parameter
//! wins, an empty value counts as unset, several hosts in a URL), so that
//! an operator's existing `psql` setup works unchanged; no crate implements
//! libpq's rules (generic URL and INI parsers differ on each of these
//! points), and tokio-postgres's own parser knows neither service files,
//! the password file nor most of the TLS parameters.
//!
//! The password (and `sslpassword`) never leaves a [`Password`] by
//! accident: `Display` and `Debug` of every type here, and every error
//! message, leave it out.
//!
//! References: libpq's "Connection Strings", "Parameter Key Words",
//! "Environment Variables", "The Password File", "The Connection Service
//! File" and "SSL Support" chapters (libpq-connect.html, libpq-envars.html,
//! libpq-pgpass.html, libpq-pgservice.html, libpq-ssl.html).

pub mod diagnose;
mod env;
mod hosts;
pub mod open;
mod origin;
mod params;
mod pgpass;
pub mod pool;
mod resolve;
pub mod service;
mod startup;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnose::Problem;
pub use env::{Env, DEFAULT_SOCKET_DIRS};
pub use open::{ConnectError, Connector, HostFailure};
pub use origin::Origin;
pub use params::KEYWORDS;
pub use pool::{Pool, PoolManager, PooledClient};
pub use startup::SessionOptions;

pub use crate::db::secret::Password;
use crate::db::tls::TlsParams;
pub use crate::db::tls::{ClientCert, Revocations, RootCert, SslMode};
use crate::text_enum::text_enum;

/// libpq's default port.
pub const DEFAULT_PORT: u16 = 5432;

/// TCP keepalive settings relink uses when the connection string sets none.
/// libpq leaves the operating system's defaults (first probe after two
/// hours); relink wants a dead server or network noticed in well under a
/// minute (SPEC §12), so that a chunk's retry starts promptly: first probe
/// after 15 s idle, then every 5 s, given up after 3 unanswered probes.
pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(15);
/// See [`DEFAULT_KEEPALIVES_IDLE`].
pub const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
/// See [`DEFAULT_KEEPALIVES_IDLE`].
pub const DEFAULT_KEEPALIVES_COUNT: u32 = 3;

/// libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    Prefer,
    Require,
}

text_enum!(ChannelBinding "channel_binding" {
    Disable = "disable",
    Prefer = "prefer",
    Require = "require",
});

/// libpq's `target_session_attrs`: which of several hosts is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    Any,
    /// Accepts writes: not a standby, and not read-only by default.
    ReadWrite,
    /// Does not accept writes by default.
    ReadOnly,
    /// Not in recovery.
    Primary,
    /// In recovery (a hot standby).
    Standby,
    /// A standby if any host is one, else any host.
    PreferStandby,
}

text_enum!(TargetSessionAttrs "target_session_attrs" {
    Any = "any",
    ReadWrite = "read-write",
    ReadOnly = "read-only",
    Primary = "primary",
    Standby = "standby",
    PreferStandby = "prefer-standby",
});

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or an IP address (TCP).
    Tcp(String),
    /// A directory holding the server's Unix socket.
    Unix(PathBuf),
}

/// One server to try, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host: for TCP, also the name the certificate must carry under
    /// `verify-full` (when only `hostaddr` is given, the address itself).
    pub host: Host,
    /// libpq's `hostaddr`: the address to connect to, skipping the name
    /// lookup of `host`.
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
    /// The host as the password file spells it: the host given, else the
    /// hostaddr, else `localhost`; a default socket directory counts as
    /// `localhost` too.
    pub pgpass_host: String,
}

impl fmt::Display for Target {
    /// `host:port`, `[v6]:port`, or `/socket/dir:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]:{}", self.port),
            Host::Tcp(name) => write!(f, "{name}:{}", self.port),
            Host::Unix(dir) => write!(f, "{}:{}", dir.display(), self.port),
        }
    }
}

/// TCP keepalive and user-timeout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalives {
    pub enabled: bool,
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
    /// libpq's `tcp_user_timeout`: how long sent data may stay
    /// unacknowledged. Defaults to what the keepalives take to give up, so
    /// a write to a dead peer fails as fast as an idle wait does.
    pub user_timeout: Option<Duration>,
}

/// Everything needed to connect, resolved and validated. `Display` is a
/// redacted URL, safe in logs; `Debug` never shows the password either.
#[derive(Clone)]
pub struct ConnInfo {
    /// The servers to try, in order (at least one).
    pub targets: Vec<Target>,
    pub user: String,
    pub dbname: String,
    password: Option<(Password, Origin)>,
    /// The password file to consult when no password was given.
    pub passfile: Option<PathBuf>,
    pub sslmode: SslMode,
    /// The trusted roots, if any are configured (explicitly, or because
    /// `~/.postgresql/root.crt` exists).
    pub rootcert: Option<RootCert>,
    pub client_cert: Option<ClientCert>,
    /// CRLs for the server's certificate (used when the chain is checked).
    pub revocations: Revocations,
    /// libpq's `sslsni`: send the host name in the TLS handshake (Server
    /// Name Indication; never for an IP address).
    pub sslsni: bool,
    /// The connection service whose parameters were used, and its file.
    pub service: Option<(String, PathBuf)>,
    pub channel_binding: ChannelBinding,
    pub target_session_attrs: TargetSessionAttrs,
    /// Per-host limit on the whole connection attempt (libpq's
    /// `connect_timeout`); None waits indefinitely, as libpq does.
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
    pub fallback_application_name: Option<String>,
    /// libpq's `options`: server settings sent at startup (`-c name=value`).
    pub options: Option<String>,
    pub keepalives: Keepalives,
}

/// A connection string or environment that cannot be used. Messages name
/// the parameter and the fix, and never contain the password (nor, where
/// the connection string may have been mis-split, any part of the input).
#[derive(Debug, thiserror::Error)]
pub enum ConnInfoError {
    #[error("{}", unknown_parameter_message(.0.as_deref()))]
    UnknownParameter(Option<String>),
    #[error("connection parameter \"{0}\" is accepted by libpq but not supported by relink: remove it from the connection string")]
    UnsupportedParameter(&'static str),
    #[error("invalid connection string: {0}")]
    Syntax(String),
    #[error("invalid value {value:?} for connection parameter \"{keyword}\" (from {origin}): expected {expected}")]
    InvalidValue {
        keyword: &'static str,
        origin: Origin,
        value: String,
        expected: String,
    },
    #[error("definition of service \"{name}\" not found (looked in {}): add a [{name}] section to ~/.pg_service.conf or the file PGSERVICEFILE names, or fix service=/PGSERVICE", files_text(.searched))]
    ServiceNotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("service file {}, line {line}: {problem}", .path.display())]
    ServiceFile {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("cannot read service file {}", .path.display())]
    ServiceFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The value is not repeated: from a mis-split URL it may hold part of
    /// the password.
    #[error("invalid {keyword} in the connection string: {problem}")]
    InvalidAddress {
        keyword: &'static str,
        problem: String,
    },
    #[error("no user name to connect as: set user in the connection string or PGUSER (the operating-system user is unknown)")]
    NoUser,
    #[error("sslrootcert=system requires sslmode=verify-full (as in libpq), but sslmode is {0}: remove sslmode or set it to verify-full")]
    SystemRootNeedsVerifyFull(SslMode),
    #[error("sslmode={sslmode} needs trusted root certificates, and {}: set sslrootcert=FILE (a PEM file with the server's CA certificate, e.g. the one your provider publishes) or sslrootcert=system to use the operating system's trust store, or use sslmode=require to encrypt without verifying the server", root_cert_missing_detail(.path.as_deref()))]
    MissingRootCert {
        sslmode: SslMode,
        path: Option<PathBuf>,
    },
    #[error("{keyword} file {} does not exist: fix the path or remove {keyword}", .path.display())]
    FileNotFound {
        keyword: &'static str,
        path: PathBuf,
    },
    #[error("client certificate {} is present, but not its private key file {}: set sslkey=FILE", .cert.display(), .key.display())]
    MissingClientKey { cert: PathBuf, key: PathBuf },
    #[error("sslmode=verify-full checks the server's certificate against the host name, but host {0} has only a hostaddr: add host=NAME (the name in the certificate) next to hostaddr, or use sslmode=verify-ca")]
    VerifyFullNeedsHostName(IpAddr),
    #[error("channel_binding=require needs TLS, but sslmode is disable: use sslmode=require or stronger")]
    ChannelBindingNeedsTls,
    #[error("password file {} has permissions {mode:04o}, so group or others can read or change it; libpq ignores such a file and relink refuses it: run chmod 600 {}", .path.display(), .path.display())]
    PasswordFilePermissions { path: PathBuf, mode: u32 },
    #[error("cannot read password file {}", .path.display())]
    PasswordFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn unknown_parameter_message(keyword: Option<&str>) -> String {
    let known = KEYWORDS.join(", ");
    match keyword {
        Some(word) => format!("unknown connection parameter \"{word}\"; known parameters: {known}"),
        None => format!("unknown connection parameter (not shown, as it does not look like a parameter name); known parameters: {known}"),
    }
}

fn files_text(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn root_cert_missing_detail(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!(
            "the default root certificate file {} does not exist",
            path.display()
        ),
        None => "none is configured (no home directory for ~/.postgresql/root.crt)".into(),
    }
}

impl ConnInfo {
    /// Resolves a connection string (None: none given, so the environment
    /// alone, as `psql` with no arguments) against `env`, the way libpq
    /// does: parameters from the string, then libpq's environment variables
    /// for any parameter the string leaves out, then libpq's defaults.
    ///
    /// Checks here what libpq checks before connecting: value syntax, list
    /// lengths, and the certificate files (`verify-ca`/`verify-full` need a
    /// root certificate). The password file is read later, per host, by
    /// [`ConnInfo::password_for`].
    ///
    /// # Errors
    /// See [`ConnInfoError`]; no message contains the password.
    pub fn resolve(text: Option<&str>, env: &Env) -> Result<Self, ConnInfoError> {
        resolve::resolve(text, env)
    }

    /// Sets the connect timeout unless the connection string or
    /// `PGCONNECT_TIMEOUT` did (relink's `--connect-timeout` is a default,
    /// while libpq's own default is to wait forever).
    #[must_use]
    pub fn with_default_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout.get_or_insert(timeout);
        self
    }

    /// The password given in the connection string or `PGPASSWORD`, if any
    /// (the password file is consulted per host by [`Self::password_for`]).
    pub fn given_password(&self) -> Option<(&Password, &Origin)> {
        self.password.as_ref().map(|(p, s)| (p, s))
    }

    /// The password for `target`: the one given in the connection string or
    /// `PGPASSWORD`, else the first matching line of the password file (libpq's
    /// order). Call it when the server asks for a password: a server that
    /// trusts the client never needs the file, and then its permissions do
    /// not matter either.
    ///
    /// # Errors
    /// When the password file is open to group or others, or unreadable.
    pub fn password_for(
        &self,
        target: &Target,
    ) -> Result<Option<(Password, Origin)>, ConnInfoError> {
        if let Some(given) = &self.password {
            return Ok(Some(given.clone()));
        }
        let Some(path) = &self.passfile else {
            return Ok(None);
        };
        let key = pgpass::Key {
            host: &target.pgpass_host,
            port: target.port,
            dbname: &self.dbname,
            user: &self.user,
        };
        Ok(pgpass::lookup(path, key)?
            .filter(|pw| !pw.is_empty())
            .map(|pw| (Password::new(pw), Origin::PasswordFile(path.clone()))))
    }

    /// A `tokio_postgres::Config` for one target, without password and with
    /// the given protocol-level TLS mode: tokio-postgres knows only
    /// disable/prefer/require, so the caller picks the mode per attempt
    /// (see [`Self::tls_attempts`]) and verification is the TLS
    /// connector's job. `target_session_attrs` is left at `any`: relink
    /// checks the session itself, after connecting.
    pub fn config_for(
        &self,
        target: &Target,
        tls: tokio_postgres::config::SslMode,
    ) -> tokio_postgres::Config {
        let mut config = self.config_without_options(target, tls);
        if let Some(options) = &self.options {
            config.options(options);
        }
        config
    }

    /// [`Self::config_for`] without the `options` startup parameter, for a
    /// server that refuses it (a connection pooler).
    pub fn config_without_options(
        &self,
        target: &Target,
        tls: tokio_postgres::config::SslMode,
    ) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        match &target.host {
            Host::Tcp(name) => config.host(name),
            Host::Unix(dir) => config.host_path(dir),
        };
        if let Some(addr) = target.hostaddr {
            config.hostaddr(addr);
        }
        config
            .port(target.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .ssl_mode(tls)
            .channel_binding(match self.channel_binding {
                ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
                ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
                ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
            })
            .keepalives(self.keepalives.enabled)
            .keepalives_idle(self.keepalives.idle)
            .keepalives_interval(self.keepalives.interval)
            .keepalives_retries(self.keepalives.count);
        if let Some(timeout) = self.keepalives.user_timeout {
            config.tcp_user_timeout(timeout);
        }
        if let Some(timeout) = self.connect_timeout {
            config.connect_timeout(timeout);
        }
        if let Some(name) = self
            .application_name
            .as_ref()
            .or(self.fallback_application_name.as_ref())
        {
            config.application_name(name);
        }
        config
    }

    /// The protocol-level TLS modes to try, in order, on `target` — how
    /// libpq's six `sslmode`s map onto tokio-postgres's three:
    ///
    /// - `disable`: plaintext.
    /// - `allow`: plaintext, then TLS if the server refused the plaintext
    ///   session (libpq does both in one `PQconnectdb`; tokio-postgres needs
    ///   two connects).
    /// - `prefer`: TLS if the server offers it, else plaintext (one connect);
    ///   then plaintext if the TLS session failed, as libpq does.
    /// - `require`, `verify-ca`, `verify-full`: TLS only.
    ///
    /// A Unix socket is always plaintext: libpq ignores `sslmode` there, as
    /// PostgreSQL never offers TLS on a socket.
    pub fn tls_attempts(&self, target: &Target) -> &'static [tokio_postgres::config::SslMode] {
        use tokio_postgres::config::SslMode as Pg;
        if matches!(target.host, Host::Unix(_)) {
            return &[Pg::Disable];
        }
        match self.sslmode {
            SslMode::Disable => &[Pg::Disable],
            SslMode::Allow => &[Pg::Disable, Pg::Require],
            SslMode::Prefer => &[Pg::Prefer, Pg::Disable],
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => &[Pg::Require],
        }
    }

    /// The TLS parameters, for [`crate::db::tls`].
    pub fn tls(&self) -> TlsParams<'_> {
        TlsParams {
            sslmode: self.sslmode,
            rootcert: self.rootcert.as_ref(),
            client_cert: self.client_cert.as_ref(),
            revocations: &self.revocations,
            sslsni: self.sslsni,
        }
    }

    /// Whether the server's certificate chain is checked (see
    /// [`TlsParams::verifies_chain`]).
    pub fn verifies_chain(&self) -> bool {
        self.tls().verifies_chain()
    }
}

/// Everything but RFC 3986's unreserved characters, which is what a URL
/// component needs for libpq to read it back.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a URL component for display.
fn url_encode(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, COMPONENT)
}

impl fmt::Display for ConnInfo {
    /// `postgres://user@host:port[,host:port…]/dbname?sslmode=…`, with a
    /// socket directory percent-encoded as libpq reads it back. Never the
    /// password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}@", url_encode(&self.user))?;
        for (i, target) in self.targets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match &target.host {
                Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]")?,
                Host::Tcp(name) => f.write_str(name)?,
                Host::Unix(dir) => write!(f, "{}", url_encode(&dir.to_string_lossy()))?,
            }
            write!(f, ":{}", target.port)?;
        }
        write!(f, "/{}?sslmode={}", url_encode(&self.dbname), self.sslmode)?;
        if self.target_session_attrs != TargetSessionAttrs::Any {
            write!(f, "&target_session_attrs={}", self.target_session_attrs)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("url", &format_args!("{self}"))
            .field("targets", &self.targets)
            .field(
                "password",
                &self.password.as_ref().map(|(_, source)| source),
            )
            .field("passfile", &self.passfile)
            .field("rootcert", &self.rootcert)
            .field("client_cert", &self.client_cert)
            .field("revocations", &self.revocations)
            .field("sslsni", &self.sslsni)
            .field("service", &self.service)
            .field("channel_binding", &self.channel_binding)
            .field("connect_timeout", &self.connect_timeout)
            .field("application_name", &self.application_name)
            .field("options", &self.options)
            .field("keepalives", &self.keepalives)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests;
