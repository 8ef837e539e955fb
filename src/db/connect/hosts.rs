//! The host list: libpq's `host`, `hostaddr` and `port` lists turned into
//! the servers to try, in order, each with libpq's defaults (the default
//! Unix socket directory if a server listens there, else `localhost`) and
//! the host name the password file matches.

use std::net::IpAddr;
use std::path::PathBuf;

use super::{ConnInfoError, Env, Host, SslMode, Target, DEFAULT_PORT};

/// Splits a comma-separated list; an unset parameter is one empty entry.
fn list(value: Option<&str>) -> Vec<&str> {
    value.map_or_else(|| vec![""], |v| v.split(',').map(str::trim).collect())
}

/// The servers to try, from the `host`, `hostaddr` and `port` values:
/// comma-separated lists, one entry per server (one port may serve all).
///
/// # Errors
/// When the lists' lengths disagree, a hostaddr or port is malformed, or
/// `verify-full` has no host name to check.
pub(super) fn targets(
    host: Option<&str>,
    hostaddr: Option<&str>,
    port: Option<&str>,
    env: &Env,
    sslmode: SslMode,
) -> Result<Vec<Target>, ConnInfoError> {
    let hosts = list(host);
    let hostaddrs = list(hostaddr);
    let ports = list(port);
    let host_given = host.is_some_and(|h| !h.is_empty());
    let hostaddr_given = hostaddr.is_some_and(|h| !h.is_empty());
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
