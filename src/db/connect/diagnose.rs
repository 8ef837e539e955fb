//! Why a connection failed, and what to change: the failure classes of
//! SPEC §12 (TLS required or unavailable, certificate not trusted, host
//! name mismatch, password missing or wrong, …).
//!
//! A failed attempt is classified by what the error is, never by the words
//! of its message: the server's SQLSTATE, the rustls error's type (through
//! [`crate::db::tls::diagnose`]), the `io::Error` of a connection that
//! could not be made or was lost, and — for the refusals tokio-postgres
//! reports without a public kind of their own (a server that offers no TLS,
//! a password the server asks for and relink did not send) — how far the
//! attempt got, which [`Stage`] records.
//!
//! Messages never contain the password: they are built from the
//! [`ConnInfo`] (which does not expose it in `Display`) and from the
//! server's and the TLS library's messages, which do not carry it.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use tokio_postgres::error::{DbError, SqlState};

use super::{ConnInfo, Host, Origin, RootCert, SslMode, Target, TargetSessionAttrs};
use crate::db::tls::{find_rustls_error, TlsFailure};

/// A failure class with what the operator should do about it; `Display`
/// gives cause and fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// pg_hba.conf admits this client only over TLS.
    ServerRequiresTls { detail: String },
    /// The server does not offer TLS, and the `sslmode` requires it.
    ServerLacksTls { sslmode: SslMode },
    /// The certificate chain does not lead to a trusted root.
    CertNotTrusted {
        roots: String,
        /// The roots are the operating system's (`sslrootcert=system`).
        system_store: bool,
        detail: String,
    },
    /// The certificate does not name the host connected to.
    CertNameMismatch { host: String, detail: String },
    /// The certificate is expired or not yet valid.
    CertExpired { detail: String },
    /// A certificate revocation list (`sslcrl`/`sslcrldir`) revokes the
    /// server's certificate, or cannot vouch for it.
    CertRevocation { revoked: bool, detail: String },
    /// The server refused the client certificate as revoked (its
    /// `ssl_crl_file` lists it).
    ClientCertRevoked { detail: String },
    /// The server ended the handshake with an alert, typically refusing
    /// the client certificate (or the lack of one).
    HandshakeRefused { detail: String },
    /// Any other TLS failure.
    Tls { detail: String },
    /// The server asked for a password and there is none.
    PasswordMissing {
        user: String,
        target: String,
        pgpass_line: String,
        passfile: String,
    },
    /// The server rejected the password.
    PasswordWrong {
        user: String,
        source: Option<String>,
    },
    /// The password file could not be used (e.g. open to others).
    PasswordFile { message: String },
    /// `channel_binding=require` could not be honoured.
    ChannelBinding {
        detail: String,
        /// `sslmode` is `require` or stronger, so the session was
        /// encrypted and the server chose an authentication method without
        /// channel binding (md5, password); under `allow`/`prefer` it may
        /// also have fallen back to plaintext.
        tls_certain: bool,
    },
    /// pg_hba.conf wants a (valid) client certificate for this user.
    ClientCertRequired { detail: String },
    /// Refused by pg_hba.conf or a role setting.
    AccessDenied { detail: String },
    /// `dbname` names no database.
    DatabaseMissing { dbname: String },
    /// No connection: name resolution, refused, reset, closed.
    Unreachable { detail: String },
    /// No answer within `connect_timeout`.
    Timeout { after: Duration },
    /// Connected, but not the kind of server `target_session_attrs` wants.
    WrongSessionKind { wanted: TargetSessionAttrs },
    /// A session relink writes on reached a standby (in recovery).
    StandbyForWrites,
    /// A connection pooler in transaction mode (see `db::pooler`): the
    /// whole message, cause and fix.
    TransactionPooler { message: String },
    /// The server (a pooler) refused the `options` startup parameter that
    /// the connection string sets.
    OptionsRefused { detail: String },
    /// Any other error the server reported.
    Server { detail: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServerRequiresTls { detail } => write!(
                f,
                "the server accepts this client only over TLS ({detail}): use sslmode=require, \
                 or better sslmode=verify-full with sslrootcert"
            ),
            Self::ServerLacksTls { sslmode } => write!(
                f,
                "the server does not support TLS, but sslmode={sslmode} requires it: enable ssl on \
                 the server or connect to one that has it; only if an unencrypted connection is \
                 acceptable, use sslmode=prefer or sslmode=disable"
            ),
            Self::CertNotTrusted {
                roots,
                system_store,
                detail,
            } => {
                write!(
                    f,
                    "the server's certificate is not trusted by {roots} ({detail}): set \
                     sslrootcert=FILE to a PEM file holding the CA certificate that signed the \
                     server's certificate (managed services publish theirs)"
                )?;
                if *system_store {
                    f.write_str("; a private CA is not in the system store")
                } else {
                    f.write_str(", or sslrootcert=system if a public CA signed it")
                }
            }
            Self::CertNameMismatch { host, detail } => write!(
                f,
                "the server's certificate is not valid for host \"{host}\" ({detail}): connect \
                 by the host name the certificate names, or use sslmode=verify-ca to check the \
                 CA without the name"
            ),
            Self::CertExpired { detail } => write!(
                f,
                "the server's certificate is not valid now ({detail}): the server's certificate \
                 must be renewed, or this machine's clock is wrong"
            ),
            Self::CertRevocation {
                revoked: true,
                detail,
            } => write!(
                f,
                "the server's certificate is revoked: the revocation list of sslcrl/sslcrldir \
                 lists it ({detail}); the server's certificate must be replaced (or the list is \
                 not the one for this server)"
            ),
            Self::CertRevocation {
                revoked: false,
                detail,
            } => write!(
                f,
                "the server's certificate cannot be checked against the revocation lists of \
                 sslcrl/sslcrldir ({detail}): give the current CRL of every CA in the server's \
                 chain (a CRL past its next update counts as out of date)"
            ),
            Self::ClientCertRevoked { detail } => write!(
                f,
                "the server refused the client certificate as revoked ({detail}; the server's \
                 ssl_crl_file lists it): get a new client certificate and set sslcert and \
                 sslkey to it"
            ),
            Self::HandshakeRefused { detail } => write!(
                f,
                "the server refused the TLS handshake ({detail}); it usually means the server \
                 wants a client certificate it trusts: set sslcert and sslkey to a certificate \
                 signed by the server's ssl_ca_file"
            ),
            Self::Tls { detail } => write!(f, "TLS handshake failed: {detail}"),
            Self::PasswordMissing {
                user,
                target,
                pgpass_line,
                passfile,
            } => write!(
                f,
                "the server at {target} asks for a password for user \"{user}\" and none was \
                 given: set PGPASSWORD, or add the line \"{pgpass_line}\" to {passfile} (with \
                 chmod 600)"
            ),
            Self::PasswordWrong { user, source } => {
                write!(f, "password authentication failed for user \"{user}\"")?;
                match source {
                    Some(source) => write!(f, " with the password from {source}: correct it there"),
                    None => f.write_str(": correct the password (URL, PGPASSWORD or ~/.pgpass)"),
                }
            }
            Self::PasswordFile { message } => f.write_str(message),
            Self::ChannelBinding {
                detail,
                tls_certain,
            } => {
                let server_fix = "have the administrator store this role's password as \
                                  SCRAM-SHA-256 (password_encryption=scram-sha-256, then set the \
                                  password again) with scram-sha-256 in pg_hba.conf";
                if *tls_certain {
                    write!(
                        f,
                        "channel_binding=require could not be honoured ({detail}): the session \
                         is encrypted, but the server asked for an authentication method without \
                         channel binding (md5 or password) instead of SCRAM-SHA-256: \
                         {server_fix}, or use channel_binding=prefer"
                    )
                } else {
                    write!(
                        f,
                        "channel_binding=require could not be honoured ({detail}): it needs \
                         SCRAM-SHA-256 authentication over TLS, and sslmode allows an unencrypted \
                         session: use sslmode=require or stronger; if the server asks for md5 or \
                         password authentication, {server_fix}, or use channel_binding=prefer"
                    )
                }
            }
            Self::ClientCertRequired { detail } => write!(
                f,
                "the server wants a client certificate for this user ({detail}): set sslcert \
                 and sslkey to a certificate (whose CN is the user name) signed by a CA the \
                 server trusts, or put them at ~/.postgresql/postgresql.crt and .key"
            ),
            Self::AccessDenied { detail } => write!(
                f,
                "the server refused the connection ({detail}): the database administrator must \
                 allow this user, database and client address in pg_hba.conf"
            ),
            Self::DatabaseMissing { dbname } => write!(
                f,
                "database \"{dbname}\" does not exist: set dbname (the URL's path) or PGDATABASE"
            ),
            Self::Unreachable { detail } => write!(
                f,
                "cannot reach the server ({detail}): check host and port, and that the server \
                 listens there (listen_addresses) and no firewall is in the way"
            ),
            Self::Timeout { after } => write!(
                f,
                "no answer within {}s: check host, port and firewalls, or raise connect_timeout",
                after.as_secs()
            ),
            Self::WrongSessionKind { wanted } => write!(
                f,
                "the server is not {} (target_session_attrs={}): another host in the list must \
                 be",
                match wanted {
                    TargetSessionAttrs::ReadWrite => "accepting writes",
                    TargetSessionAttrs::ReadOnly => "read-only",
                    TargetSessionAttrs::Primary => "a primary",
                    TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => "a standby",
                    TargetSessionAttrs::Any => "acceptable",
                },
                wanted
            ),
            Self::StandbyForWrites => f.write_str(
                "the server is a standby (in recovery) and accepts no writes, which this command \
                 needs: connect to the primary, or list the primary and its standbys as hosts \
                 with target_session_attrs=read-write so relink finds whichever is the primary",
            ),
            Self::TransactionPooler { message } => f.write_str(message),
            Self::OptionsRefused { detail } => write!(
                f,
                "the server refused the startup parameter \"options\" that the connection \
                 string sets ({detail}), as connection poolers such as PgBouncer do: remove \
                 options from the connection string (or PGOPTIONS), and set those settings on \
                 the role instead (ALTER ROLE … SET …)"
            ),
            Self::Server { detail } => f.write_str(detail),
        }
    }
}

/// How far a connection attempt got, as the attempt itself recorded it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stage {
    /// The sslmode step required TLS (tokio-postgres's `require`).
    pub tls_required: bool,
    /// The server accepted the TLS request and the handshake began.
    pub tls_started: bool,
    /// The handshake began and failed.
    pub tls_failed: bool,
    /// A password was in the attempt's configuration.
    pub password_sent: bool,
}

impl Stage {
    /// A session already open (its checks, its settings): no TLS request
    /// or authentication lies ahead, so only the server's and the
    /// connection's failures remain.
    pub const CONNECTED: Self = Self {
        tls_required: false,
        tls_started: true,
        tls_failed: false,
        password_sent: true,
    };
}

/// What a failed attempt's driver error is, told by its type and the
/// attempt's [`Stage`].
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// The server refused, with an SQLSTATE.
    Server(&'a DbError),
    /// The TLS handshake failed (with rustls's error when there is one).
    Handshake(Option<&'a rustls::Error>),
    /// The server answered the TLS request with "no TLS here", and the
    /// step required TLS: the only way tokio-postgres fails a `require`
    /// attempt before the handshake without an I/O error.
    TlsRefused,
    /// The server asked for a password and none was sent: the only way
    /// tokio-postgres fails an authentication without a password, an I/O
    /// error or a server error, but for channel binding (see below).
    PasswordMissing,
    /// tokio-postgres could not authenticate as the server asked with the
    /// password sent: channel binding required but not offered, no SASL
    /// mechanism it knows, an authentication method it does not support.
    Authentication,
    /// No connection, or it was lost: an I/O error (refused, reset, name
    /// resolution, timed out) or a closed connection.
    Connection,
    /// Anything else (a protocol error).
    Other,
}

impl<'a> Failure<'a> {
    /// Classifies `err`, the end of an attempt that got as far as `stage`.
    pub fn of(err: &'a tokio_postgres::Error, stage: Stage) -> Self {
        if let Some(db) = err.as_db_error() {
            return Self::Server(db);
        }
        let rustls = find_rustls_error(err);
        if stage.tls_failed || rustls.is_some() {
            return Self::Handshake(rustls);
        }
        if err.is_closed() {
            return Self::Connection;
        }
        match err.source() {
            Some(source) => match source.downcast_ref::<std::io::Error>() {
                // Bad bytes from or for the server: a protocol failure,
                // not a lost connection.
                Some(io)
                    if matches!(
                        io.kind(),
                        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                    ) =>
                {
                    Self::Other
                }
                Some(_) => Self::Connection,
                None if stage.tls_required && !stage.tls_started => Self::TlsRefused,
                // tokio-postgres checks channel binding before the
                // password for cleartext and md5: without a password,
                // look for one first; the next attempt tells them apart.
                None if !stage.password_sent => Self::PasswordMissing,
                None => Self::Authentication,
            },
            None => Self::Other,
        }
    }

    /// Whether libpq would go on to the next host: the server could not be
    /// reached or did not answer. Once a server has answered (an
    /// authentication or TLS failure), libpq stops. relink also moves on
    /// when the server answered that it cannot take the session now —
    /// starting up, shutting down, or out of connection slots — which libpq
    /// treats as final; with several hosts that is exactly a failover in
    /// progress.
    pub fn next_host(self) -> bool {
        match self {
            Self::Server(db) => {
                let code = db.code();
                *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::TOO_MANY_CONNECTIONS
            }
            Self::Connection => true,
            _ => false,
        }
    }

    /// Whether a failed TLS attempt should be retried in plaintext under
    /// `sslmode=prefer` (libpq does so after any failure of the TLS
    /// attempt; relink does after TLS failures and pg_hba refusals, not
    /// after a wrong password, which plaintext would not fix).
    pub fn prefer_falls_back(self) -> bool {
        match self {
            Self::Handshake(_) | Self::TlsRefused => true,
            Self::Server(db) => *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            _ => false,
        }
    }

    /// Whether a failed plaintext attempt should be retried with TLS under
    /// `sslmode=allow`: the server refused the unencrypted session.
    pub fn allow_falls_back(self) -> bool {
        matches!(self, Self::Server(db) if *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    }
}

/// Classifies `err`, a failed connection to `target` for `info` that got
/// as far as `stage`; `password` says where the password came from, if one
/// was sent.
pub fn diagnose(
    err: &tokio_postgres::Error,
    stage: Stage,
    info: &ConnInfo,
    target: &Target,
    password: Option<&Origin>,
) -> Problem {
    match Failure::of(err, stage) {
        Failure::Handshake(Some(tls)) => tls_problem(tls, info, target),
        // Lost during the handshake, or a protocol failure: as libpq
        // says, the connection is the problem.
        Failure::Handshake(None) | Failure::Other | Failure::Connection => Problem::Unreachable {
            detail: chain_text(err),
        },
        Failure::Server(db) => server_problem(db, info, password),
        Failure::TlsRefused => Problem::ServerLacksTls {
            sslmode: info.sslmode,
        },
        Failure::PasswordMissing => Problem::PasswordMissing {
            user: info.user.clone(),
            target: target.to_string(),
            pgpass_line: format!(
                "{}:{}:{}:{}:PASSWORD",
                escape_pgpass(&target.pgpass_host),
                target.port,
                escape_pgpass(&info.dbname),
                escape_pgpass(&info.user)
            ),
            // A passfile that is not a plain file (PGPASSFILE=/dev/null
            // turns the file off) is no place to add a line.
            passfile: match &info.passfile {
                Some(path) if !path.exists() || path.is_file() => path.display().to_string(),
                _ => "~/.pgpass (or the file PGPASSFILE names)".to_owned(),
            },
        },
        Failure::Authentication => Problem::ChannelBinding {
            detail: chain_text(err),
            tls_certain: matches!(
                info.sslmode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            ),
        },
    }
}

/// A refusal by the server, by its SQLSTATE. PostgreSQL gives every
/// pg_hba.conf refusal the one SQLSTATE 28000; which rule refused (a
/// `hostssl` line the plaintext session did not match, a client
/// certificate wanted) is said only in the server's message, the one place
/// where relink reads the server's words — the message the server wrote
/// for the operator, passed on to them with the fix.
fn server_problem(db: &DbError, info: &ConnInfo, password: Option<&Origin>) -> Problem {
    let detail = db.message().to_owned();
    let code = db.code();
    if *code == SqlState::INVALID_PASSWORD {
        Problem::PasswordWrong {
            user: info.user.clone(),
            source: password.map(ToString::to_string),
        }
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && (detail.contains("no encryption") || detail.contains("SSL off"))
    {
        // PostgreSQL 12+: 'no pg_hba.conf entry for host …, no
        // encryption'; earlier: '…, SSL off'.
        Problem::ServerRequiresTls { detail }
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && detail.contains("certificate")
    {
        // 'connection requires a valid client certificate',
        // 'certificate authentication failed for user …'.
        Problem::ClientCertRequired { detail }
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        Problem::AccessDenied { detail }
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        Problem::DatabaseMissing {
            dbname: info.dbname.clone(),
        }
    } else {
        Problem::Server {
            detail: format!("{} ({})", detail, code.code()),
        }
    }
}

fn tls_problem(err: &rustls::Error, info: &ConnInfo, target: &Target) -> Problem {
    let detail = err.to_string();
    match TlsFailure::of(err) {
        TlsFailure::NameMismatch => Problem::CertNameMismatch {
            host: match &target.host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.display().to_string(),
            },
            detail,
        },
        TlsFailure::Expired => Problem::CertExpired { detail },
        TlsFailure::Revocation { revoked } => Problem::CertRevocation { revoked, detail },
        TlsFailure::NotTrusted => Problem::CertNotTrusted {
            roots: match &info.rootcert {
                Some(RootCert::File(path)) => {
                    format!("the root certificate file {}", path.display())
                }
                Some(RootCert::System) => {
                    "the operating system's trust store (sslrootcert=system)".to_owned()
                }
                None => "any configured root".to_owned(),
            },
            system_store: info.rootcert == Some(RootCert::System),
            detail,
        },
        TlsFailure::ClientCertRevoked => Problem::ClientCertRevoked { detail },
        TlsFailure::Refused => Problem::HandshakeRefused { detail },
        TlsFailure::Other => Problem::Tls { detail },
    }
}

/// `err` and its causes, joined with ": ".
pub(super) fn chain_text(err: &tokio_postgres::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cause = current.source();
    }
    parts.join(": ")
}

/// A password-file field with `:` and `\` escaped.
fn escape_pgpass(text: &str) -> String {
    text.replace('\\', "\\\\").replace(':', "\\:")
}
