//! [`ConnInfo::resolve`]: libpq's precedence (connection string, then the
//! connection service's file, then environment variable, then built-in
//! default) and its checks, one parameter group at a time.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::service::{self, Service};
use super::{
    parse, pgpass, ChannelBinding, ClientCert, ConnInfo, ConnInfoError, Env, Host, Keepalives,
    Password, PasswordSource, Revocations, RootCert, SslMode, Target, TargetSessionAttrs,
    DEFAULT_KEEPALIVES_COUNT, DEFAULT_KEEPALIVES_IDLE, DEFAULT_KEEPALIVES_INTERVAL, DEFAULT_PORT,
};

pub(super) fn resolve(text: Option<&str>, env: &Env) -> Result<ConnInfo, ConnInfoError> {
    let params = match text {
        Some(text) => parse::parse(text)?,
        None => parse::Params::new(),
    };
    // The service: named in the string, else by PGSERVICE (libpq's order).
    let service = match params
        .get("service")
        .map(String::as_str)
        .or_else(|| env.var("PGSERVICE"))
        .filter(|name| !name.is_empty())
    {
        Some(name) => Some(service::lookup(
            name,
            params.get("servicefile").map(String::as_str),
            env,
        )?),
        None => None,
    };
    let p = Lookup {
        params,
        service,
        env,
    };

    let user = p
        .value("user")
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .or_else(|| env.os_user.clone())
        .ok_or(ConnInfoError::NoUser)?;
    let dbname = p
        .value("dbname")
        .filter(|d| !d.is_empty())
        .map_or_else(|| user.clone(), str::to_owned);
    let password = match p.get("password") {
        // An empty password means none, as in libpq.
        Some(("", _)) | None => None,
        Some((pw, Origin::String)) => Some((Password::new(pw), PasswordSource::ConnectionString)),
        Some((pw, Origin::Service(service))) => Some((
            Password::new(pw),
            PasswordSource::ServiceFile(service.file.clone()),
        )),
        Some((pw, Origin::Env(_))) => Some((Password::new(pw), PasswordSource::Environment)),
    };
    let passfile = p
        .value("passfile")
        .map(PathBuf::from)
        .or_else(|| pgpass::default_path(env.home.as_deref()));

    let explicit_sslmode = p.choice(
        "sslmode",
        &[
            ("disable", SslMode::Disable),
            ("allow", SslMode::Allow),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ],
        "disable, allow, prefer, require, verify-ca or verify-full",
    )?;
    let explicit_root = p.value("sslrootcert").filter(|v| !v.is_empty());
    // libpq 16: sslrootcert=system makes verify-full the default and
    // refuses anything weaker, since any public CA would vouch for a
    // host name an attacker controls.
    let sslmode = match (explicit_root, explicit_sslmode) {
        (Some("system"), None) => SslMode::VerifyFull,
        (Some("system"), Some(mode)) if mode != SslMode::VerifyFull => {
            return Err(ConnInfoError::SystemRootNeedsVerifyFull(mode.as_str()))
        }
        (_, mode) => mode.unwrap_or(SslMode::Prefer),
    };

    let targets = resolve_targets(&p, env, sslmode)?;
    let (rootcert, client_cert, revocations) = if sslmode == SslMode::Disable {
        (None, None, Revocations::default())
    } else {
        (
            resolve_rootcert(explicit_root, sslmode, env)?,
            resolve_client_cert(&p, env)?,
            resolve_revocations(&p, env)?,
        )
    };
    let sslsni = match p.get("sslsni") {
        None => true,
        Some((value, origin)) => match value.trim() {
            "1" => true,
            "0" => false,
            _ => {
                return Err(ConnInfoError::InvalidValue {
                    keyword: "sslsni",
                    origin: origin.to_string(),
                    value: value.to_owned(),
                    expected: "1 or 0",
                })
            }
        },
    };
    let channel_binding = p
        .choice(
            "channel_binding",
            &[
                ("disable", ChannelBinding::Disable),
                ("prefer", ChannelBinding::Prefer),
                ("require", ChannelBinding::Require),
            ],
            "disable, prefer or require",
        )?
        .unwrap_or(ChannelBinding::Prefer);
    if channel_binding == ChannelBinding::Require && sslmode == SslMode::Disable {
        return Err(ConnInfoError::ChannelBindingNeedsTls);
    }
    let target_session_attrs = p
        .choice(
            "target_session_attrs",
            &[
                ("any", TargetSessionAttrs::Any),
                ("read-write", TargetSessionAttrs::ReadWrite),
                ("read-only", TargetSessionAttrs::ReadOnly),
                ("primary", TargetSessionAttrs::Primary),
                ("standby", TargetSessionAttrs::Standby),
                ("prefer-standby", TargetSessionAttrs::PreferStandby),
            ],
            "any, read-write, read-only, primary, standby or prefer-standby",
        )?
        .unwrap_or(TargetSessionAttrs::Any);

    // libpq: zero or negative waits forever; 1 second is raised to 2,
    // "to avoid problems with rounding".
    let connect_timeout = match p.integer("connect_timeout")? {
        Some(s) if s > 0 => Some(Duration::from_secs(u64::try_from(s.max(2)).unwrap_or(2))),
        _ => None,
    };
    let keepalives = resolve_keepalives(&p)?;

    Ok(ConnInfo {
        targets,
        user,
        dbname,
        password,
        passfile,
        sslmode,
        rootcert,
        client_cert,
        revocations,
        sslsni,
        service: p.service.as_ref().map(|s| (s.name.clone(), s.file.clone())),
        channel_binding,
        target_session_attrs,
        connect_timeout,
        application_name: p.value("application_name").map(str::to_owned),
        fallback_application_name: p.value("fallback_application_name").map(str::to_owned),
        options: p
            .value("options")
            .filter(|o| !o.trim().is_empty())
            .map(str::to_owned),
        keepalives,
    })
}

/// The libpq environment variable that supplies each parameter's default.
fn env_var(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "host" => "PGHOST",
        "hostaddr" => "PGHOSTADDR",
        "port" => "PGPORT",
        "user" => "PGUSER",
        "password" => "PGPASSWORD",
        "passfile" => "PGPASSFILE",
        "dbname" => "PGDATABASE",
        "connect_timeout" => "PGCONNECT_TIMEOUT",
        "application_name" => "PGAPPNAME",
        "options" => "PGOPTIONS",
        "sslmode" => "PGSSLMODE",
        "sslrootcert" => "PGSSLROOTCERT",
        "sslcert" => "PGSSLCERT",
        "sslkey" => "PGSSLKEY",
        "sslcrl" => "PGSSLCRL",
        "sslcrldir" => "PGSSLCRLDIR",
        "sslsni" => "PGSSLSNI",
        "channel_binding" => "PGCHANNELBINDING",
        "target_session_attrs" => "PGTARGETSESSIONATTRS",
        "tcp_user_timeout" => "PGTCPUSERTIMEOUT",
        _ => return None,
    })
}

/// Where a parameter's value came from, for messages.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    String,
    Service(&'a Service),
    Env(&'static str),
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::String => f.write_str("the connection string"),
            Self::Service(service) => write!(
                f,
                "service \"{}\" in {}",
                service.name,
                service.file.display()
            ),
            Self::Env(var) => f.write_str(var),
        }
    }
}

/// Parameter lookup with libpq's precedence: the connection string, then
/// the service file's section, then the environment variable.
struct Lookup<'a> {
    params: parse::Params,
    service: Option<Service>,
    env: &'a Env,
}

impl Lookup<'_> {
    /// The value and where it came from (for messages).
    fn get(&self, keyword: &'static str) -> Option<(&str, Origin<'_>)> {
        if let Some(value) = self.params.get(keyword) {
            return Some((value.as_str(), Origin::String));
        }
        if let Some(service) = &self.service {
            if let Some(value) = service.params.get(keyword) {
                return Some((value.as_str(), Origin::Service(service)));
            }
        }
        let var = env_var(keyword)?;
        self.env.var(var).map(|v| (v, Origin::Env(var)))
    }

    fn value(&self, keyword: &'static str) -> Option<&str> {
        self.get(keyword).map(|(v, _)| v)
    }

    /// An enumerated parameter.
    fn choice<T: Copy>(
        &self,
        keyword: &'static str,
        choices: &[(&str, T)],
        expected: &'static str,
    ) -> Result<Option<T>, ConnInfoError> {
        let Some((value, origin)) = self.get(keyword) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, v)| Some(*v))
            .ok_or_else(|| ConnInfoError::InvalidValue {
                keyword,
                origin: origin.to_string(),
                value: value.to_owned(),
                expected,
            })
    }

    /// An integer parameter (libpq accepts surrounding white space).
    fn integer(&self, keyword: &'static str) -> Result<Option<i64>, ConnInfoError> {
        let Some((value, origin)) = self.get(keyword) else {
            return Ok(None);
        };
        value
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ConnInfoError::InvalidValue {
                keyword,
                origin: origin.to_string(),
                value: value.to_owned(),
                expected: "an integer",
            })
    }

    fn seconds(&self, keyword: &'static str) -> Result<Option<Duration>, ConnInfoError> {
        Ok(self
            .integer(keyword)?
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))))
    }
}

/// Splits a comma-separated list; an unset parameter is one empty entry.
fn list(value: Option<&str>) -> Vec<&str> {
    value.map_or_else(|| vec![""], |v| v.split(',').map(str::trim).collect())
}

fn resolve_targets(
    p: &Lookup<'_>,
    env: &Env,
    sslmode: SslMode,
) -> Result<Vec<Target>, ConnInfoError> {
    let hosts = list(p.value("host"));
    let hostaddrs = list(p.value("hostaddr"));
    let ports = list(p.value("port"));
    let host_given = p.value("host").is_some_and(|h| !h.is_empty());
    let hostaddr_given = p.value("hostaddr").is_some_and(|h| !h.is_empty());
    if host_given && hostaddr_given && hosts.len() != hostaddrs.len() {
        return Err(ConnInfoError::InvalidAddress {
            keyword: "hostaddr",
            problem: format!(
                "{} host names but {} hostaddr values; give one hostaddr per host",
                hosts.len(),
                hostaddrs.len()
            ),
        });
    }
    let count = if hostaddr_given && !host_given {
        hostaddrs.len()
    } else {
        hosts.len()
    };
    if ports.len() != 1 && ports.len() != count {
        return Err(ConnInfoError::InvalidAddress {
            keyword: "port",
            problem: format!(
                "{} port numbers for {count} hosts; give one port for all hosts or one per host",
                ports.len()
            ),
        });
    }
    (0..count)
        .map(|i| {
            let port = parse_port(if ports.len() == 1 { ports[0] } else { ports[i] })?;
            let name = hosts.get(i).copied().unwrap_or("");
            let hostaddr = match hostaddrs.get(i).copied().unwrap_or("") {
                "" => None,
                text => Some(text.parse::<IpAddr>().map_err(|_| {
                    ConnInfoError::InvalidAddress {
                        keyword: "hostaddr",
                        problem: "not a numeric IPv4 or IPv6 address (hostaddr takes an address; put names in host)".into(),
                    }
                })?),
            };
            match hostaddr {
                // libpq checks the certificate against `host`; with none,
                // verify-full cannot succeed, so say so before connecting.
                Some(addr) if name.is_empty() && sslmode == SslMode::VerifyFull => {
                    Err(ConnInfoError::VerifyFullNeedsHostName(addr))
                }
                _ => Ok(target(name, hostaddr, port, env)),
            }
        })
        .collect()
}

fn parse_port(text: &str) -> Result<u16, ConnInfoError> {
    if text.is_empty() {
        return Ok(DEFAULT_PORT);
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(ConnInfoError::InvalidAddress {
            keyword: "port",
            problem: "expected a number from 1 to 65535 (if this is a URL whose password holds \
                      \"/\", \"@\" or \",\", percent-encode them as %2F, %40, %2C)"
                .into(),
        }),
    }
}

/// One target with libpq's defaults: no host and no hostaddr means the
/// default Unix socket directory if a server listens there, else
/// `localhost` over TCP. (libpq uses its compiled-in socket directory
/// without looking; relink checks the candidates so that one binary works
/// on Debian-like systems, upstream builds and machines with no local
/// server.)
fn target(name: &str, hostaddr: Option<IpAddr>, port: u16, env: &Env) -> Target {
    if name.starts_with('/') {
        let dir = PathBuf::from(name);
        let pgpass_host = if env.is_default_socket_dir(&dir) {
            "localhost".to_owned()
        } else {
            name.to_owned()
        };
        return Target {
            host: Host::Unix(dir),
            hostaddr,
            port,
            pgpass_host,
        };
    }
    if !name.is_empty() {
        return Target {
            host: Host::Tcp(name.to_owned()),
            hostaddr,
            port,
            pgpass_host: name.to_owned(),
        };
    }
    if let Some(addr) = hostaddr {
        // libpq matches the password file against hostaddr when no host
        // is given; the address also serves as the TLS server name.
        return Target {
            host: Host::Tcp(addr.to_string()),
            hostaddr: Some(addr),
            port,
            pgpass_host: addr.to_string(),
        };
    }
    let host = match env.default_socket_dir(port) {
        Some(dir) => Host::Unix(dir.to_path_buf()),
        None => Host::Tcp("localhost".to_owned()),
    };
    Target {
        host,
        hostaddr: None,
        port,
        pgpass_host: "localhost".to_owned(),
    }
}

/// `sslrootcert`: `system`, a file, or by default `~/.postgresql/root.crt`
/// if it exists.
fn resolve_rootcert(
    explicit: Option<&str>,
    sslmode: SslMode,
    env: &Env,
) -> Result<Option<RootCert>, ConnInfoError> {
    match explicit {
        Some("system") => Ok(Some(RootCert::System)),
        // Stricter than libpq, which treats a missing explicit file as "no
        // root certificate" and, under require, silently skips verification:
        // a typo must not turn verification off.
        Some(path) if !Path::new(path).exists() => Err(ConnInfoError::FileNotFound {
            keyword: "sslrootcert",
            path: PathBuf::from(path),
        }),
        Some(path) => Ok(Some(RootCert::File(PathBuf::from(path)))),
        None => {
            let default = env.dot_postgresql("root.crt");
            match default {
                Some(path) if path.exists() => Ok(Some(RootCert::File(path))),
                path if sslmode.verifies() => Err(ConnInfoError::MissingRootCert {
                    sslmode: sslmode.as_str(),
                    path,
                }),
                _ => Ok(None),
            }
        }
    }
}

/// `sslcert`/`sslkey`, by default `~/.postgresql/postgresql.crt` and `.key`
/// when the certificate exists (libpq sends no client certificate
/// otherwise).
fn resolve_client_cert(p: &Lookup<'_>, env: &Env) -> Result<Option<ClientCert>, ConnInfoError> {
    let cert = match p.value("sslcert").filter(|v| !v.is_empty()) {
        // Stricter than libpq (which goes on without a certificate): the
        // operator asked for this file.
        Some(path) if !Path::new(path).exists() => {
            return Err(ConnInfoError::FileNotFound {
                keyword: "sslcert",
                path: PathBuf::from(path),
            })
        }
        Some(path) => PathBuf::from(path),
        None => match env.dot_postgresql("postgresql.crt") {
            Some(path) if path.exists() => path,
            _ => return Ok(None),
        },
    };
    let key = p
        .value("sslkey")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env.dot_postgresql("postgresql.key"));
    // libpq's sslpassword: for an encrypted key; ignored for a plain one.
    let key_password = p
        .value("sslpassword")
        .filter(|v| !v.is_empty())
        .map(Password::new);
    match key {
        Some(key) if key.exists() => Ok(Some(ClientCert {
            cert,
            key,
            key_password,
        })),
        Some(key) => Err(ConnInfoError::MissingClientKey { cert, key }),
        None => Err(ConnInfoError::MissingClientKey {
            cert,
            key: PathBuf::from("~/.postgresql/postgresql.key"),
        }),
    }
}

/// `sslcrl` (else `~/.postgresql/root.crl` when it exists, as in libpq) and
/// `sslcrldir`. Stricter than libpq, which silently goes without a CRL
/// file or directory it cannot find: an explicit one that is missing is an
/// error, since a typo must not turn revocation checks off.
fn resolve_revocations(p: &Lookup<'_>, env: &Env) -> Result<Revocations, ConnInfoError> {
    let file = match p.value("sslcrl").filter(|v| !v.is_empty()) {
        Some(path) if !Path::new(path).is_file() => {
            return Err(ConnInfoError::FileNotFound {
                keyword: "sslcrl",
                path: PathBuf::from(path),
            })
        }
        Some(path) => Some(PathBuf::from(path)),
        None => env.dot_postgresql("root.crl").filter(|path| path.is_file()),
    };
    let dir = match p.value("sslcrldir").filter(|v| !v.is_empty()) {
        Some(path) if !Path::new(path).is_dir() => {
            return Err(ConnInfoError::FileNotFound {
                keyword: "sslcrldir",
                path: PathBuf::from(path),
            })
        }
        other => other.map(PathBuf::from),
    };
    Ok(Revocations { file, dir })
}

fn resolve_keepalives(p: &Lookup<'_>) -> Result<Keepalives, ConnInfoError> {
    let enabled = p.integer("keepalives")? != Some(0);
    let idle = p
        .seconds("keepalives_idle")?
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_KEEPALIVES_IDLE);
    let interval = p
        .seconds("keepalives_interval")?
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_KEEPALIVES_INTERVAL);
    let count = match p.integer("keepalives_count")? {
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        _ => DEFAULT_KEEPALIVES_COUNT,
    };
    // libpq's tcp_user_timeout is in milliseconds; 0 is the system default.
    let user_timeout = match p.integer("tcp_user_timeout")? {
        Some(ms) => u64::try_from(ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        None if enabled => Some(idle + interval * count),
        None => None,
    };
    Ok(Keepalives {
        enabled,
        idle,
        interval,
        count,
        user_timeout,
    })
}
