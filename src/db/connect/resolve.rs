//! [`ConnInfo::resolve`]: libpq's precedence (connection string, then the
//! connection service's file, then environment variable, then built-in
//! default) and its checks, one parameter group at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::service::{self, Service};
use super::{
    hosts, params, pgpass, ChannelBinding, ClientCert, ConnInfo, ConnInfoError, Env, Keepalives,
    Origin, Password, Revocations, RootCert, SslMode, TargetSessionAttrs, DEFAULT_KEEPALIVES_COUNT,
    DEFAULT_KEEPALIVES_IDLE, DEFAULT_KEEPALIVES_INTERVAL,
};
use crate::text_enum::TextEnum;

pub(super) fn resolve(text: Option<&str>, env: &Env) -> Result<ConnInfo, ConnInfoError> {
    let params = match text {
        Some(text) => params::parse(text)?,
        None => params::Params::new(),
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
        Some((pw, origin)) => Some((Password::new(pw), origin)),
    };
    let passfile = p
        .value("passfile")
        .map(PathBuf::from)
        .or_else(|| pgpass::default_path(env.home.as_deref()));

    let explicit_sslmode = p.choice::<SslMode>("sslmode")?;
    let explicit_root = p.value("sslrootcert").filter(|v| !v.is_empty());
    // libpq 16: sslrootcert=system makes verify-full the default and
    // refuses anything weaker, since any public CA would vouch for a
    // host name an attacker controls.
    let sslmode = match (explicit_root, explicit_sslmode) {
        (Some("system"), None) => SslMode::VerifyFull,
        (Some("system"), Some(mode)) if mode != SslMode::VerifyFull => {
            return Err(ConnInfoError::SystemRootNeedsVerifyFull(mode))
        }
        (_, mode) => mode.unwrap_or(SslMode::Prefer),
    };

    let targets = hosts::targets(
        p.value("host"),
        p.value("hostaddr"),
        p.value("port"),
        env,
        sslmode,
    )?;
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
                    origin,
                    value: value.to_owned(),
                    expected: "1 or 0".to_owned(),
                })
            }
        },
    };
    let channel_binding = p
        .choice::<ChannelBinding>("channel_binding")?
        .unwrap_or(ChannelBinding::Prefer);
    if channel_binding == ChannelBinding::Require && sslmode == SslMode::Disable {
        return Err(ConnInfoError::ChannelBindingNeedsTls);
    }
    let target_session_attrs = p
        .choice::<TargetSessionAttrs>("target_session_attrs")?
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

/// Parameter lookup with libpq's precedence: the connection string, then
/// the service file's section, then the environment variable.
struct Lookup<'a> {
    params: params::Params,
    service: Option<Service>,
    env: &'a Env,
}

impl Lookup<'_> {
    /// The value and where it came from (for messages).
    fn get(&self, keyword: &'static str) -> Option<(&str, Origin)> {
        if let Some(value) = self.params.get(keyword) {
            return Some((value.as_str(), Origin::ConnectionString));
        }
        if let Some(service) = &self.service {
            if let Some(value) = service.params.get(keyword) {
                let origin = Origin::ServiceFile {
                    service: service.name.clone(),
                    file: service.file.clone(),
                };
                return Some((value.as_str(), origin));
            }
        }
        let var = env_var(keyword)?;
        self.env.var(var).map(|v| (v, Origin::Env(var)))
    }

    fn value(&self, keyword: &'static str) -> Option<&str> {
        self.get(keyword).map(|(v, _)| v)
    }

    /// An enumerated parameter.
    fn choice<T: TextEnum>(&self, keyword: &'static str) -> Result<Option<T>, ConnInfoError> {
        let Some((value, origin)) = self.get(keyword) else {
            return Ok(None);
        };
        T::from_text(value)
            .map(Some)
            .ok_or_else(|| ConnInfoError::InvalidValue {
                keyword,
                origin,
                value: value.to_owned(),
                expected: T::accepted(),
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
                origin,
                value: value.to_owned(),
                expected: "an integer".to_owned(),
            })
    }

    fn seconds(&self, keyword: &'static str) -> Result<Option<Duration>, ConnInfoError> {
        Ok(self
            .integer(keyword)?
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))))
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
                path if sslmode.verifies() => Err(ConnInfoError::MissingRootCert { sslmode, path }),
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
