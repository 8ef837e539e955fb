//! Why a connection failed, and what to change: the failure classes of
//! SPEC §12 (TLS required or unavailable, certificate not trusted, host
//! name mismatch, password missing or wrong, …) found in a
//! `tokio_postgres::Error` and its source chain, where rustls's own error
//! sits inside an `io::Error`.
//!
//! Messages never contain the password: they are built from the
//! [`ConnInfo`] (which does not expose it in `Display`) and from the
//! server's and the TLS library's messages, which do not carry it.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};
use tokio_postgres::error::SqlState;

use crate::db::conninfo::{ConnInfo, PasswordSource, SslMode, Target, TargetSessionAttrs};

/// A failure class with what the operator should do about it; `Display`
/// gives cause and fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// pg_hba.conf admits this client only over TLS.
    ServerRequiresTls { detail: String },
    /// The server does not offer TLS, and the `sslmode` requires it.
    ServerLacksTls { sslmode: SslMode },
    /// The certificate chain does not lead to a trusted root.
    CertNotTrusted { roots: String, detail: String },
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
                "the server does not support TLS, but sslmode={} requires it: enable ssl on the \
                 server or connect to one that has it; only if an unencrypted connection is \
                 acceptable, use sslmode=prefer or sslmode=disable",
                sslmode.as_str()
            ),
            Self::CertNotTrusted { roots, detail } => {
                write!(
                    f,
                    "the server's certificate is not trusted by {roots} ({detail}): set \
                     sslrootcert=FILE to a PEM file holding the CA certificate that signed the \
                     server's certificate (managed services publish theirs)"
                )?;
                if roots.contains("sslrootcert=system") {
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
                wanted.as_str()
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

/// Classifies `err`, a failed connection to `target` for `info`;
/// `password` says where the password came from, if one was sent.
pub fn diagnose(
    err: &tokio_postgres::Error,
    info: &ConnInfo,
    target: &Target,
    password: Option<&PasswordSource>,
) -> Problem {
    if let Some(tls) = find_rustls_error(err) {
        return tls_problem(tls, info, target);
    }
    if let Some(db) = err.as_db_error() {
        let detail = db.message().to_owned();
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD {
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
        };
    }
    if chain_says(err, "server does not support TLS") {
        return Problem::ServerLacksTls {
            sslmode: info.sslmode,
        };
    }
    if chain_says(err, "password missing") {
        return Problem::PasswordMissing {
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
        };
    }
    if chain_says(err, "server did not use channel binding")
        || chain_says(err, "unsupported SASL mechanism")
    {
        return Problem::ChannelBinding {
            detail: chain_text(err),
            tls_certain: matches!(
                info.sslmode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            ),
        };
    }
    let text = err.to_string();
    if text.starts_with("timeout") {
        return Problem::Timeout {
            after: info.connect_timeout.unwrap_or_default(),
        };
    }
    Problem::Unreachable {
        detail: chain_text(err),
    }
}

/// The message for `err` from a connection made with `info` (to its first
/// host when the host is unknown): cause and fix, never the password. For
/// callers that connect without [`super::Connector`].
pub fn explain(err: &tokio_postgres::Error, info: &ConnInfo) -> String {
    match info.targets.first() {
        Some(target) => format!(
            "cannot connect to {info}: {}",
            diagnose(err, info, target, None)
        ),
        None => format!("cannot connect to {info}: {}", chain_text(err)),
    }
}

/// Whether libpq would go on to the next host after `err`: the server could
/// not be reached or did not answer. Once a server has answered (an
/// authentication or TLS failure), libpq stops. relink also moves on when
/// the server answered that it cannot take the session now — starting up,
/// shutting down, or out of connection slots — which libpq treats as
/// final; with several hosts that is exactly a failover in progress.
pub fn next_host(err: &tokio_postgres::Error) -> bool {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        return *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::TOO_MANY_CONNECTIONS;
    }
    if find_rustls_error(err).is_some()
        || chain_says(err, "server does not support TLS")
        || chain_says(err, "password missing")
    {
        return false;
    }
    let text = err.to_string();
    // tokio-postgres's kinds for "no connection": connect, I/O, closed,
    // timeout (its Kind is private; its Display is stable within 0.7).
    text.starts_with("error connecting")
        || text.starts_with("error communicating")
        || text.starts_with("connection closed")
        || text.starts_with("timeout")
}

/// Whether a failed TLS attempt should be retried in plaintext under
/// `sslmode=prefer` (libpq does so after any failure of the TLS attempt;
/// relink does after TLS failures and pg_hba refusals, not after a wrong
/// password, which plaintext would not fix).
pub fn prefer_falls_back(err: &tokio_postgres::Error) -> bool {
    err.to_string().starts_with("error performing TLS")
        || err
            .as_db_error()
            .is_some_and(|db| *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
}

/// Whether a failed plaintext attempt should be retried with TLS under
/// `sslmode=allow`: the server refused the unencrypted session.
pub fn allow_falls_back(err: &tokio_postgres::Error) -> bool {
    err.as_db_error()
        .is_some_and(|db| *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
}

fn tls_problem(err: &rustls::Error, info: &ConnInfo, target: &Target) -> Problem {
    let detail = err.to_string();
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Problem::CertNameMismatch {
                    host: match &target.host {
                        crate::db::conninfo::Host::Tcp(name) => name.clone(),
                        crate::db::conninfo::Host::Unix(dir) => dir.display().to_string(),
                    },
                    detail,
                }
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Problem::CertExpired { detail },
            CertificateError::Revoked
            | CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Problem::CertRevocation {
                revoked: matches!(cert, CertificateError::Revoked),
                detail,
            },
            _ => Problem::CertNotTrusted {
                roots: match &info.rootcert {
                    Some(crate::db::conninfo::RootCert::File(path)) => {
                        format!("the root certificate file {}", path.display())
                    }
                    Some(crate::db::conninfo::RootCert::System) => {
                        "the operating system's trust store (sslrootcert=system)".to_owned()
                    }
                    None => "any configured root".to_owned(),
                },
                detail,
            },
        },
        rustls::Error::AlertReceived(AlertDescription::CertificateRevoked) => {
            Problem::ClientCertRevoked { detail }
        }
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::HandshakeFailure,
        ) => Problem::HandshakeRefused { detail },
        _ => Problem::Tls { detail },
    }
}

/// The rustls error in `err`'s source chain. tokio-rustls wraps it in an
/// `io::Error`, whose `source()` skips the wrapped error itself, so each
/// `io::Error` is opened with `get_ref()`.
pub(super) fn find_rustls_error(err: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
        }
        cause = current.source();
    }
    None
}

/// Whether some error in the chain below `err` displays exactly `text`
/// (tokio-postgres reports several conditions only as message strings).
fn chain_says(err: &tokio_postgres::Error, text: &str) -> bool {
    let mut cause = err.source();
    while let Some(current) = cause {
        if current.to_string() == text {
            return true;
        }
        cause = current.source();
    }
    false
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
