//! The private servers of `scripts/pg-server` — the TLS-only server and the
//! replica set for the connection (SPEC §12) and throttling (SPEC §13)
//! tests, the PgBouncers (SPEC §12 "Connection poolers") and node_exporter
//! (SPEC §14) — each started (or reused) once per test process, on first
//! use; the script's lock makes concurrent test processes safe. `make test`
//! needs no setup for them: ports and directory follow RELINK_PG_TLS_PORT,
//! RELINK_PG_PRIMARY_PORT, RELINK_PG_REPLICA_PORT, RELINK_PG_POOLER_PORT,
//! RELINK_PG_BOUNCER_SESSION_PORT, RELINK_PG_BOUNCER_TRANSACTION_PORT,
//! RELINK_PG_NODE_EXPORTER_PORT and RELINK_PG_DIR. The daemons log to files
//! of their own (under `.pg/`); the script's diagnostics go to the test's
//! captured output, shown only if that test fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The TLS-only server (`scripts/pg-server tls`): over TCP it accepts TLS
/// only (an unencrypted connection gets "no pg_hba.conf entry … no
/// encryption", as on AWS RDS with rds.force_ssl). All paths are absolute.
#[derive(Debug, Clone)]
pub struct TlsServer {
    /// `localhost`: the only name in the server certificate (verify-full
    /// with host 127.0.0.1 fails the host-name check).
    pub host: String,
    pub port: u16,
    /// Superuser `postgres` over the Unix socket (trust), a postgresql:// URL
    /// tokio-postgres parses: the only way in without TLS.
    pub admin_url: String,
    /// The throwaway CA that signed the server and client certificates.
    pub ca: String,
    /// A CA that signed nothing here ("untrusted CA" tests).
    pub untrusted_ca: String,
    /// Client certificate (CN = `cert_user`) and its key (mode 0600, owned
    /// by the user that ran the script).
    pub client_cert: String,
    pub client_key: String,
    /// SCRAM-SHA-256 login and its password.
    pub pw_user: String,
    pub pw: String,
    /// md5 login (password stored as md5) and its password.
    pub md5_user: String,
    pub md5_pw: String,
    /// Login by client certificate only.
    pub cert_user: String,
    /// NOLOGIN group of the three logins; owner of [`Server::Tls`](super::Server::Tls) databases.
    pub db_owner: String,
    /// `client_key` encrypted (PKCS#8, AES-256-CBC) with
    /// `client_key_password`, for `sslpassword`.
    pub client_key_encrypted: String,
    pub client_key_password: String,
    /// A second client certificate for `cert_user` (and its key), revoked:
    /// the server's `ssl_crl_file` lists it.
    pub revoked_client_cert: String,
    pub revoked_client_key: String,
    /// The CA's revocation list revoking nothing.
    pub empty_crl: String,
    /// The CA's revocation list revoking the server's certificate, and a
    /// directory holding it under its OpenSSL hash name (`sslcrldir`).
    pub server_revoked_crl: String,
    pub server_revoked_crl_dir: String,
    /// A CRL of version 1 (no extensions), which relink refuses.
    pub v1_crl: String,
}

/// A primary with one streaming replica (`scripts/pg-server replica`), trust
/// auth on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    /// `postgres` on the primary's `postgres` database.
    pub primary_url: String,
    /// `postgres` on the replica (a hot standby: read-only).
    pub replica_url: String,
    /// The replica's `application_name` in the primary's `pg_stat_replication`.
    pub replica_name: String,
    /// A LOGIN, CREATEDB role on the primary without `pg_monitor`: it sees the
    /// replica's row in `pg_stat_replication` with pid, usename and
    /// application_name only; state, LSNs and lags are NULL.
    pub nomon_user: String,
}

/// Runs `scripts/pg-server <command>` and parses its `KEY=value` lines. The
/// script's diagnostics go to the test's captured output.
pub fn pg_server(command: &str) -> HashMap<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-server");
    let out = Command::new(&script)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let diagnostics = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`scripts/pg-server {command}` failed ({:?}):\n{diagnostics}",
        out.status.code()
    );
    eprint!("{diagnostics}");
    parse_assignments(&String::from_utf8_lossy(&out.stdout))
}

/// `KEY=value` lines as the script prints them: a value is plain or
/// shell-quoted ('…', with `'\''` for a quote).
pub fn parse_assignments(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), shell_unquote(value)))
        .collect()
}

fn shell_unquote(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `scripts/pg-server <command>` run once per process (on the first call):
/// `build` makes `cell`'s value of the script's `KEY=value` lines, each
/// taken with `get` (which fails naming a key the script did not print).
fn started<T>(
    cell: &'static OnceLock<T>,
    command: &str,
    build: impl FnOnce(&mut dyn FnMut(&str) -> String) -> T,
) -> &'static T {
    cell.get_or_init(|| {
        let mut vars = pg_server(command);
        build(&mut |key| take(&mut vars, command, key))
    })
}

/// Takes `key` out of the script's output, or fails naming it.
fn take(vars: &mut HashMap<String, String>, command: &str, key: &str) -> String {
    vars.remove(key)
        .unwrap_or_else(|| panic!("`scripts/pg-server {command}` printed no {key}"))
}

/// The TLS server, started on the first call of the process.
pub fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    started(&SERVER, "tls", |get| TlsServer {
        host: get("PG_TLS_HOST"),
        port: get("PG_TLS_PORT").parse().expect("PG_TLS_PORT is a port"),
        admin_url: get("PG_TLS_ADMIN_URL"),
        ca: get("PG_TLS_CA"),
        untrusted_ca: get("PG_TLS_UNTRUSTED_CA"),
        client_cert: get("PG_TLS_CLIENT_CERT"),
        client_key: get("PG_TLS_CLIENT_KEY"),
        pw_user: get("PG_TLS_PW_USER"),
        pw: get("PG_TLS_PW"),
        md5_user: get("PG_TLS_MD5_USER"),
        md5_pw: get("PG_TLS_MD5_PW"),
        cert_user: get("PG_TLS_CERT_USER"),
        db_owner: get("PG_TLS_DB_OWNER"),
        client_key_encrypted: get("PG_TLS_CLIENT_KEY_ENCRYPTED"),
        client_key_password: get("PG_TLS_CLIENT_KEY_PASSWORD"),
        revoked_client_cert: get("PG_TLS_REVOKED_CLIENT_CERT"),
        revoked_client_key: get("PG_TLS_REVOKED_CLIENT_KEY"),
        empty_crl: get("PG_TLS_EMPTY_CRL"),
        server_revoked_crl: get("PG_TLS_SERVER_REVOKED_CRL"),
        server_revoked_crl_dir: get("PG_TLS_SERVER_REVOKED_CRL_DIR"),
        v1_crl: get("PG_TLS_V1_CRL"),
    })
}

/// The replica set, started on the first call of the process (returns once
/// the replica streams).
pub fn replica_set() -> &'static ReplicaSet {
    static SET: OnceLock<ReplicaSet> = OnceLock::new();
    started(&SET, "replica", |get| ReplicaSet {
        primary_url: get("PG_PRIMARY_URL"),
        replica_url: get("PG_REPLICA_URL"),
        replica_name: get("PG_REPLICA_NAME"),
        nomon_user: get("PG_NOMON_USER"),
    })
}

/// Percent-encodes `s` for a URL's user, password or query value (`/` is
/// kept: paths stay readable).
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `postgres://user[:password]@hosts/dbname?query`, values percent-encoded;
/// `hosts` as written (`localhost:54339`, `127.0.0.1:1,localhost:54339`).
pub fn pg_url(
    hosts: &str,
    user: &str,
    password: Option<&str>,
    dbname: &str,
    query: &[(&str, &str)],
) -> String {
    let password = password
        .map(|p| format!(":{}", url_encode(p)))
        .unwrap_or_default();
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect();
    format!(
        "postgres://{}{password}@{hosts}/{}?{}",
        url_encode(user),
        url_encode(dbname),
        query.join("&")
    )
}

impl TlsServer {
    /// `postgres://user[:password]@localhost:port/dbname?sslmode=verify-full
    /// &sslrootcert=CA`, plus `extra` query parameters (`(name, value)`).
    pub fn url(
        &self,
        user: &str,
        password: Option<&str>,
        dbname: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let mut query = vec![
            ("sslmode", "verify-full"),
            ("sslrootcert", self.ca.as_str()),
        ];
        query.extend_from_slice(extra);
        let hosts = format!("{}:{}", self.host, self.port);
        pg_url(&hosts, user, password, dbname, &query)
    }

    /// The SCRAM login, password in the URL, TLS verified.
    pub fn pw_url(&self, dbname: &str) -> String {
        self.url(&self.pw_user, Some(&self.pw), dbname, &[])
    }

    /// The md5 login, password in the URL, TLS verified.
    pub fn md5_url(&self, dbname: &str) -> String {
        self.url(&self.md5_user, Some(&self.md5_pw), dbname, &[])
    }

    /// The certificate login (`sslcert`, `sslkey`), TLS verified.
    pub fn cert_url(&self, dbname: &str) -> String {
        self.url(
            &self.cert_user,
            None,
            dbname,
            &[("sslcert", &self.client_cert), ("sslkey", &self.client_key)],
        )
    }
}

/// A PostgreSQL server (trust auth on 127.0.0.1) with two PgBouncers in
/// front of it, both with PgBouncer's defaults but `pool_mode`: so both
/// refuse the `options` startup parameter.
#[derive(Debug, Clone)]
pub struct PoolerSet {
    /// `postgres` on the server itself, database `postgres`.
    pub direct_url: String,
    /// Through the PgBouncer with `pool_mode = session`.
    pub session_url: String,
    /// Through the PgBouncer with `pool_mode = transaction`.
    pub transaction_url: String,
}

/// The pooler set, started on the first call of the process.
pub fn pooler_set() -> &'static PoolerSet {
    static SET: OnceLock<PoolerSet> = OnceLock::new();
    started(&SET, "pooler", |get| PoolerSet {
        direct_url: get("PG_POOLER_DIRECT_URL"),
        session_url: get("PG_BOUNCER_SESSION_URL"),
        transaction_url: get("PG_BOUNCER_TRANSACTION_URL"),
    })
}

/// node_exporter with only its textfile collector, reading one directory.
#[derive(Debug, Clone)]
pub struct NodeExporter {
    /// `http://127.0.0.1:PORT/metrics`.
    pub url: String,
    /// The textfile collector's directory (`*.prom` files in it are read).
    pub textfile_dir: PathBuf,
    /// node_exporter's own log (its stderr), where gathering errors go.
    pub log: PathBuf,
}

/// node_exporter, started on the first call of the process.
pub fn node_exporter() -> &'static NodeExporter {
    static EXPORTER: OnceLock<NodeExporter> = OnceLock::new();
    started(&EXPORTER, "node-exporter", |get| NodeExporter {
        url: get("PG_NODE_EXPORTER_URL"),
        textfile_dir: PathBuf::from(get("PG_NODE_EXPORTER_TEXTFILE_DIR")),
        log: PathBuf::from(get("PG_NODE_EXPORTER_LOG")),
    })
}

impl NodeExporter {
    /// One scrape: the HTTP status line and the body (HTTP/1.0, so the
    /// server closes the connection after the body).
    pub async fn scrape(&self) -> (String, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = self
            .url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .expect("an http:// URL");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("cannot reach node_exporter at {address}: {e}"));
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await
            .expect("send the request");
        let mut reply = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stream.read_to_end(&mut reply),
        )
        .await
        .expect("node_exporter answers within 30 s")
        .expect("read the reply");
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP reply: {reply}"));
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    }
}
