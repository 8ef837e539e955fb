//! Opening sessions the way libpq does: a minimal fake PostgreSQL server on
//! a loopback port for the driver-level paths (password file, fallbacks,
//! classification of the driver's errors), and the real server for the
//! end-to-end checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::db::connect::tests::TempDir;
use crate::db::connect::{Env, Host, Pool, PoolManager, SslMode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::db::tls::tests::{env_with_home, info, Ca, ServerConfigExt as _};

#[test]
fn the_connector_is_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Connector>();
}

// --------------------------------------------------- fake PostgreSQL server

/// A PostgreSQL server just sufficient for the startup phase: SSLRequest,
/// startup packet, cleartext password (optional), AuthenticationOk,
/// ReadyForQuery; then it idles until the client leaves.
#[derive(Clone, Default)]
struct Fake {
    tls: Option<Arc<rustls::ServerConfig>>,
    password: Option<String>,
    /// pg_hba.conf with `hostssl` lines only.
    reject_plaintext: bool,
    /// Accepts and never answers.
    silent: bool,
    /// Answers the startup packet with this error (SQLSTATE, message).
    refuse: Option<(&'static str, &'static str)>,
    /// Reports `in_hot_standby=on` at startup, as a PostgreSQL 14+ standby.
    hot_standby: bool,
    /// Answers every simple query with one row of three booleans, as
    /// relink's session check reads them: in recovery (`hot_standby`),
    /// read-only (likewise), relink's startup settings in force (yes).
    answers: bool,
}

struct Running {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(self) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            // Bounded: no test needs more than a handful of connections.
            for _ in 0..16 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let fake = self.clone();
                tokio::spawn(async move {
                    let _ = fake.serve(stream).await;
                });
            }
        });
        Running {
            addr,
            connections,
            task,
        }
    }

    async fn serve(self, mut stream: TcpStream) -> std::io::Result<()> {
        if self.silent {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            return Ok(());
        }
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len == 8 && code == 80_877_103 {
            return match &self.tls {
                Some(config) => {
                    stream.write_all(b"S").await?;
                    let tls = tokio_rustls::TlsAcceptor::from(config.clone())
                        .accept(stream)
                        .await?;
                    self.startup(tls, true, None).await
                }
                None => {
                    stream.write_all(b"N").await?;
                    self.startup(stream, false, None).await
                }
            };
        }
        self.startup(stream, false, Some(len)).await
    }

    async fn startup<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        tls: bool,
        started: Option<u32>,
    ) -> std::io::Result<()> {
        let (len, read) = match started {
            Some(len) => (len, 8),
            None => (read_u32(&mut s).await?, 4),
        };
        let mut rest = vec![0u8; usize::try_from(len).expect("len") - read];
        s.read_exact(&mut rest).await?;
        if !tls && self.reject_plaintext {
            return send_error(
                &mut s,
                "28000",
                "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", no encryption",
            )
            .await;
        }
        if let Some((code, message)) = self.refuse {
            return send_error(&mut s, code, message).await;
        }
        if let Some(password) = &self.password {
            s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
            s.flush().await?;
            let mut tag = [0u8; 1];
            s.read_exact(&mut tag).await?;
            let len = read_u32(&mut s).await?;
            let mut body = vec![0u8; usize::try_from(len).expect("len") - 4];
            s.read_exact(&mut body).await?;
            if body.strip_suffix(&[0]).unwrap_or(&body) != password.as_bytes() {
                return send_error(
                    &mut s,
                    "28P01",
                    "password authentication failed for user \"u\"",
                )
                .await;
            }
        }
        s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).await?;
        if self.hot_standby {
            let body = b"in_hot_standby\0on\0";
            let len = u32::try_from(body.len() + 4).expect("len");
            s.write_all(b"S").await?;
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(body).await?;
        }
        s.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await?;
        s.flush().await?;
        if self.answers {
            return self.answer(s).await;
        }
        let mut buf = [0u8; 256];
        while s.read(&mut buf).await? > 0 {}
        Ok(())
    }

    /// Answers simple queries (see [`Fake::answers`]) until the client
    /// leaves.
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(&self, mut s: S) -> std::io::Result<()> {
        let flag = if self.hot_standby { b't' } else { b'f' };
        loop {
            let mut tag = [0u8; 1];
            if s.read(&mut tag).await? == 0 {
                return Ok(());
            }
            let len = read_u32(&mut s).await?;
            let mut body = vec![0u8; usize::try_from(len).expect("len") - 4];
            s.read_exact(&mut body).await?;
            match tag[0] {
                b'Q' => {
                    let mut description = vec![0, 3];
                    for name in [&b"a"[..], b"b", b"c"] {
                        description.extend_from_slice(name);
                        description.push(0);
                        // table oid, column, type oid (bool), size, modifier, format
                        description.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 1]);
                        description.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
                    }
                    let mut row = vec![0, 3];
                    for value in [flag, flag, b't'] {
                        row.extend_from_slice(&[0, 0, 0, 1, value]);
                    }
                    for (tag, body) in [
                        (b'T', description),
                        (b'D', row),
                        (b'C', b"SELECT 1\0".to_vec()),
                        (b'Z', b"I".to_vec()),
                    ] {
                        let len = u32::try_from(body.len() + 4).expect("len");
                        s.write_all(&[tag]).await?;
                        s.write_all(&len.to_be_bytes()).await?;
                        s.write_all(&body).await?;
                    }
                    s.flush().await?;
                }
                b'X' => return Ok(()),
                _ => {}
            }
        }
    }
}

async fn read_u32<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<u32> {
    let mut bytes = [0u8; 4];
    s.read_exact(&mut bytes).await?;
    Ok(u32::from_be_bytes(bytes))
}

async fn send_error<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let len = u32::try_from(fields.len() + 4).expect("len");
    s.write_all(b"E").await?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&fields).await?;
    s.flush().await
}

fn connector(text: &str, env: &Env) -> Connector {
    Connector::new(info(text, env), SessionOptions::default()).expect("connector")
}

fn problem(err: &ConnectError) -> &Problem {
    err.last_problem().expect("a classified problem")
}

#[tokio::test]
async fn certificate_failures_are_classified_through_the_driver() {
    let home = TempDir::new("fake-tls");
    let env = env_with_home(&home);
    let ca = Ca::new("fake CA");
    let root = home.file("ca.pem", &ca.pem(), 0o644);
    let fake = Fake {
        tls: Some(ca.issue(&["db.example.test"]).server_config(None)),
        ..Fake::default()
    }
    .start()
    .await;
    let port = fake.addr.port();

    let base = format!(
        "hostaddr=127.0.0.1 port={port} user=u dbname=d sslrootcert={}",
        root.display()
    );
    connector(
        &format!("host=db.example.test sslmode=verify-full {base}"),
        &env,
    )
    .connect()
    .await
    .expect("verify-full with the right name");
    connector(
        &format!("host=wrong.example.test sslmode=verify-ca {base}"),
        &env,
    )
    .connect()
    .await
    .expect("verify-ca ignores the name");

    let err = connector(
        &format!("host=wrong.example.test sslmode=verify-full {base}"),
        &env,
    )
    .connect()
    .await
    .expect_err("name mismatch");
    assert!(
        matches!(problem(&err), Problem::CertNameMismatch { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("wrong.example.test") && text.contains("sslmode=verify-ca"),
        "{text}"
    );

    let other = home.file("other.pem", &Ca::new("other CA").pem(), 0o644);
    let err = connector(
        &format!("host=db.example.test hostaddr=127.0.0.1 port={port} user=u sslmode=verify-ca sslrootcert={}", other.display()),
        &env,
    )
    .connect()
    .await
    .expect_err("unknown CA");
    assert!(
        matches!(problem(&err), Problem::CertNotTrusted { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("sslrootcert=FILE") && text.contains("sslrootcert=system"),
        "{text}"
    );
    assert!(text.contains(&other.display().to_string()), "{text}");
    // libpq stops at a TLS failure rather than trying the next host.
    assert!(matches!(&err, ConnectError::Failed { failures, .. } if failures.len() == 1));
}

#[tokio::test]
async fn tls_availability_and_fallbacks() {
    let env = env_with_home(&TempDir::new("fake-fallback"));
    let plain = Fake::default().start().await;
    let port = plain.addr.port();
    let err = connector(
        &format!("host=127.0.0.1 port={port} user=u sslmode=require"),
        &env,
    )
    .connect()
    .await
    .expect_err("no TLS");
    assert_eq!(
        problem(&err),
        &Problem::ServerLacksTls {
            sslmode: SslMode::Require
        }
    );
    assert!(err.to_string().contains("does not support TLS"), "{err}");
    for mode in ["prefer", "allow", "disable"] {
        connector(
            &format!("host=127.0.0.1 port={port} user=u sslmode={mode}"),
            &env,
        )
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }

    // A server that admits only TLS sessions.
    let ca = Ca::new("hostssl CA");
    let tls_only = Fake {
        tls: Some(ca.issue(&["db.example.test"]).server_config(None)),
        reject_plaintext: true,
        ..Fake::default()
    }
    .start()
    .await;
    let port = tls_only.addr.port();
    let err = connector(
        &format!("host=127.0.0.1 port={port} user=u sslmode=disable"),
        &env,
    )
    .connect()
    .await
    .expect_err("plaintext refused");
    assert!(
        matches!(problem(&err), Problem::ServerRequiresTls { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("sslmode=require"), "{err}");
    // allow: plaintext first, then TLS when refused.
    connector(
        &format!("host=127.0.0.1 port={port} user=u sslmode=allow"),
        &env,
    )
    .connect()
    .await
    .expect("allow falls back to TLS");
    assert_eq!(tls_only.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn password_file_is_read_per_host_when_asked() {
    let home = TempDir::new("fake-pgpass");
    let fake = Fake {
        password: Some("from-file".into()),
        ..Fake::default()
    }
    .start()
    .await;
    let port = fake.addr.port();
    let passfile = home.file(
        "pgpass",
        &format!("other:{port}:*:*:nope\n127.0.0.1:{port}:d:u:from-file\n"),
        0o600,
    );
    let mut env = env_with_home(&home);
    let text = format!(
        "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
        passfile.display()
    );
    let conn = connector(&text, &env);
    conn.connect().await.expect("password from the file");
    assert_eq!(
        fake.connections.load(Ordering::SeqCst),
        2,
        "asked, then answered"
    );
    conn.connect().await.expect("again");
    assert_eq!(
        fake.connections.load(Ordering::SeqCst),
        3,
        "remembered for the pool"
    );

    // Wrong password in the file: named as the source.
    let wrong = home.file("wrong", "*:*:*:*:bad-pass\n", 0o600);
    let err = connector(
        &format!(
            "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
            wrong.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect_err("wrong password");
    assert!(
        matches!(problem(&err), Problem::PasswordWrong { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&wrong.display().to_string()) && !text.contains("bad-pass"),
        "{text}"
    );

    // No password anywhere.
    let none = home.file("none", "", 0o600);
    let err = connector(
        &format!(
            "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
            none.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect_err("no password");
    let text = err.to_string();
    assert!(
        text.contains("PGPASSWORD") && text.contains(&format!("127.0.0.1:{port}:d:u:PASSWORD")),
        "{text}"
    );

    // A password file open to others is refused, naming the fix.
    let open = home.file("open", "*:*:*:*:from-file\n", 0o644);
    let err = connector(
        &format!(
            "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable passfile={}",
            open.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect_err("open password file");
    let text = err.to_string();
    assert!(
        text.contains(&format!("chmod 600 {}", open.display())) && !text.contains("from-file"),
        "{text}"
    );

    // PGPASSWORD beats the file.
    env = Env::from_vars([("PGPASSWORD", "from-file")]);
    env.os_user = Some("u".into());
    connector(
        &format!(
            "host=127.0.0.1 port={port} dbname=d sslmode=disable passfile={}",
            open.display()
        ),
        &env,
    )
    .connect()
    .await
    .expect("PGPASSWORD");
}

#[tokio::test]
async fn hosts_are_tried_in_order_like_libpq() {
    let env = env_with_home(&TempDir::new("fake-hosts"));
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let good = Fake::default().start().await;
    let silent = Fake {
        silent: true,
        ..Fake::default()
    }
    .start()
    .await;
    let text = format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={closed},{},{} user=u sslmode=disable connect_timeout=2",
        silent.addr.port(),
        good.addr.port()
    );
    let started = std::time::Instant::now();
    connector(&text, &env).connect().await.expect("third host");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // Once a server answered with an authentication failure, libpq stops.
    let guarded = Fake {
        password: Some("right".into()),
        ..Fake::default()
    }
    .start()
    .await;
    let text = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=u password=wrong sslmode=disable",
        guarded.addr.port(),
        good.addr.port()
    );
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("stops at the first host");
    assert!(
        matches!(&err, ConnectError::Failed { failures, .. } if failures.len() == 1),
        "{err}"
    );
    assert!(!err.to_string().contains("password=wrong"));
    assert!(!err.is_transient());

    let text = format!("host=127.0.0.1,127.0.0.1 port={closed},{closed} user=u sslmode=disable");
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("nobody there");
    assert!(
        matches!(problem(&err), Problem::Unreachable { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_writing_session_on_a_standby_is_refused_naming_the_fix() {
    let env = env_with_home(&TempDir::new("fake-standby"));
    let standby = Fake {
        hot_standby: true,
        answers: true,
        ..Fake::default()
    }
    .start()
    .await;
    let primary = Fake::default().start().await;
    // Under target_session_attrs=any the first host that answers is the
    // one (libpq's rule): a writing session stops there, saying why.
    let text = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=u sslmode=disable",
        standby.addr.port(),
        primary.addr.port()
    );
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("a standby takes no writes");
    assert!(
        matches!(&err, ConnectError::Failed { failures, .. } if failures.len() == 1),
        "{err}"
    );
    assert_eq!(problem(&err), &Problem::StandbyForWrites);
    assert!(
        err.to_string().contains("target_session_attrs=read-write"),
        "{err}"
    );
    // A failover may be promoting it: worth retrying mid-run.
    assert!(err.is_transient());
    // A read-only session (dry run, verify, status) may read there.
    let reader = Connector::new(
        info(&text, &env),
        SessionOptions {
            read_only: true,
            ..SessionOptions::default()
        },
    )
    .expect("connector");
    reader.connect().await.expect("reads on the standby");
}

#[tokio::test]
async fn the_session_check_is_bounded_by_connect_timeout() {
    let env = env_with_home(&TempDir::new("fake-check"));
    // Lets the client in, then never answers a query.
    let mute = Fake::default().start().await;
    let text = format!(
        "host=127.0.0.1 port={} user=u sslmode=disable connect_timeout=2 \
         target_session_attrs=read-write",
        mute.addr.port()
    );
    let started = std::time::Instant::now();
    let err = connector(&text, &env)
        .connect()
        .await
        .expect_err("no answer to the check");
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    assert!(matches!(problem(&err), Problem::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn server_refusals_are_classified() {
    let env = env_with_home(&TempDir::new("fake-refusals"));
    for (code, message, wanted) in [
        (
            "28000",
            "connection requires a valid client certificate",
            "sslcert",
        ),
        (
            "28000",
            "pg_hba.conf rejects connection for host \"127.0.0.1\"",
            "pg_hba.conf",
        ),
        ("3D000", "database \"d\" does not exist", "PGDATABASE"),
    ] {
        let fake = Fake {
            refuse: Some((code, message)),
            ..Fake::default()
        }
        .start()
        .await;
        let text = format!(
            "host=127.0.0.1 port={} user=u dbname=d sslmode=disable",
            fake.addr.port()
        );
        let err = connector(&text, &env).connect().await.expect_err(message);
        assert!(err.to_string().contains(wanted), "{err}");
    }

    // A server starting up or shutting down (a failover in progress): relink
    // goes on to the next host, where libpq would stop.
    let starting = Fake {
        refuse: Some(("57P03", "the database system is starting up")),
        ..Fake::default()
    }
    .start()
    .await;
    let good = Fake::default().start().await;
    let text = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=u sslmode=disable",
        starting.addr.port(),
        good.addr.port()
    );
    connector(&text, &env)
        .connect()
        .await
        .expect("the second host");
}

// ------------------------------------------------------------ real server

/// The test server: `TEST_DATABASE_URL` (set by `make test`), else the
/// passwordless postgres on 127.0.0.1:5432.
fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn server(extra: &str, session: SessionOptions) -> Connector {
    let url = server_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut env = Env::from_vars(Vec::<(String, String)>::new());
    env.os_user = Some("postgres".into());
    let text = format!("{url}{sep}{extra}");
    Connector::new(info(&text, &env), session).expect("connector")
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn real_server_sslmodes() {
    let (client, _task) = server("sslmode=disable", SessionOptions::default())
        .connect()
        .await
        .expect("disable");
    assert!(!uses_tls(&client).await);
    let ssl_on = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get::<_, String>(0)
        == "on";
    let tcp = server("sslmode=disable", SessionOptions::default())
        .info()
        .targets
        .iter()
        .all(|t| matches!(t.host, Host::Tcp(_)));
    let (client, _task) = server("sslmode=prefer", SessionOptions::default())
        .connect()
        .await
        .expect("prefer works with or without TLS");
    assert_eq!(uses_tls(&client).await, ssl_on && tcp);
    match server("sslmode=require", SessionOptions::default())
        .connect()
        .await
    {
        Ok((client, _task)) => assert!(ssl_on && uses_tls(&client).await),
        Err(err) => {
            assert!(!ssl_on || !tcp, "{err}");
            assert!(
                matches!(problem(&err), Problem::ServerLacksTls { .. }),
                "{err}"
            );
        }
    }
}

#[tokio::test]
async fn real_server_session_options_and_attrs() {
    let session = SessionOptions {
        application_name: Some("relink test".into()),
        settings: vec![
            ("statement_timeout".into(), "1234ms".into()),
            ("search_path".into(), "\"a b\",public".into()),
        ],
        read_only: true,
    };
    let conn = server(
        "sslmode=disable&target_session_attrs=read-write",
        session.clone(),
    );
    let (client, _task) = conn
        .connect()
        .await
        .expect("the primary, though relink's session is read-only");
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'), \
                    current_setting('default_transaction_read_only'), current_setting('search_path')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(row.get::<_, String>(0), "relink test");
    assert_eq!(row.get::<_, String>(1), "1234ms");
    assert_eq!(row.get::<_, String>(2), "on");
    assert_eq!(row.get::<_, String>(3), "\"a b\",public");

    let (client, _task) = server("sslmode=disable&application_name=mine", session)
        .connect()
        .await
        .expect("connect");
    let name: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .expect("name")
        .get(0);
    assert_eq!(name, "mine", "the operator's application_name wins");

    let err = server(
        "sslmode=disable&target_session_attrs=standby",
        SessionOptions::default(),
    )
    .connect()
    .await
    .expect_err("no standby");
    assert!(
        matches!(problem(&err), Problem::WrongSessionKind { .. }),
        "{err}"
    );
    server(
        "sslmode=disable&target_session_attrs=prefer-standby",
        SessionOptions::default(),
    )
    .connect()
    .await
    .expect("prefer-standby settles for the primary");
    server(
        "sslmode=disable&target_session_attrs=primary",
        SessionOptions::default(),
    )
    .connect()
    .await
    .expect("primary");
}

#[tokio::test]
async fn real_server_pool() {
    let conn = server("sslmode=prefer", SessionOptions::default());
    let pool = Pool::builder(PoolManager::new(conn.clone()))
        .max_size(2)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("pool");
    let client = pool.get().await.expect("pooled connection");
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(one, 1);
}

/// With the server's own (self-signed) certificate as root, where this
/// process can read it: verify-full by the name it carries, and a name
/// mismatch when connecting by address.
#[tokio::test]
async fn real_server_verification_with_its_own_certificate() {
    let (client, _task) = server("sslmode=disable", SessionOptions::default())
        .connect()
        .await
        .expect("disable");
    let row = client
        .query_one(
            "SELECT current_setting('ssl'), current_setting('ssl_cert_file')",
            &[],
        )
        .await
        .expect("settings");
    let (ssl, cert_file): (String, String) = (row.get(0), row.get(1));
    let target = server("sslmode=disable", SessionOptions::default())
        .info()
        .targets[0]
        .clone();
    let Some(addr) = (match &target.host {
        Host::Tcp(name) => name.parse::<std::net::IpAddr>().ok(),
        Host::Unix(_) => None,
    }) else {
        return; // not a TCP address: nothing to verify
    };
    let pem = std::fs::read_to_string(&cert_file).unwrap_or_default();
    if ssl != "on" || !pem.contains("BEGIN CERTIFICATE") {
        return; // the server has no TLS, or its certificate is not readable here
    }
    let names: Vec<String> = {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("server certificate");
        let parsed = rustls::server::ParsedCertificate::try_from(&der).expect("parse");
        ["localhost", "db.example.test"]
            .iter()
            .filter(|n| {
                rustls::client::verify_server_name(
                    &parsed,
                    &ServerName::try_from(**n).expect("name"),
                )
                .is_ok()
            })
            .map(|n| (*n).to_owned())
            .collect()
    };
    let mut env = Env::from_vars(Vec::<(String, String)>::new());
    env.os_user = Some("postgres".into());
    let base = format!(
        "hostaddr={addr} port={} user=postgres dbname=postgres sslrootcert={cert_file}",
        target.port
    );
    if let Some(name) = names.first() {
        let conn = Connector::new(
            info(&format!("host={name} sslmode=verify-full {base}"), &env),
            SessionOptions::default(),
        )
        .expect("connector");
        let (client, _task) = conn
            .connect()
            .await
            .expect("verify-full by the certificate's name");
        assert!(uses_tls(&client).await);
    }
    let conn = Connector::new(
        info(
            &format!("host=wrong.example.test sslmode=verify-full {base}"),
            &env,
        ),
        SessionOptions::default(),
    )
    .expect("connector");
    let err = conn.connect().await.expect_err("wrong name");
    assert!(
        matches!(
            problem(&err),
            Problem::CertNameMismatch { .. } | Problem::CertNotTrusted { .. }
        ),
        "{err}"
    );
}
