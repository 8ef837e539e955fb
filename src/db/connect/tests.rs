//! Resolution against libpq's documented semantics, with an injected
//! environment (the process environment is never read or changed, so the
//! tests run in parallel).

use super::*;

const SECRET: &str = "hunter2-S3CRET";

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "relink-conninfo-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub(crate) fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// An environment with an OS user, no home and no local socket.
fn env(vars: &[(&str, &str)]) -> Env {
    let mut env = Env::from_vars(vars.iter().copied());
    env.os_user = Some("osuser".into());
    env
}

fn resolve(text: &str, env: &Env) -> ConnInfo {
    ConnInfo::resolve(Some(text), env).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn resolve_err(text: Option<&str>, env: &Env) -> String {
    match ConnInfo::resolve(text, env) {
        Ok(info) => panic!("{text:?} resolved to {info}"),
        Err(err) => err.to_string(),
    }
}

fn tcp(name: &str, port: u16) -> Target {
    Target {
        host: Host::Tcp(name.into()),
        hostaddr: None,
        port,
        pgpass_host: name.into(),
    }
}

#[test]
fn url_and_key_value_resolve_alike() {
    let e = env(&[]);
    let url = resolve(
        &format!("postgresql://alice:{SECRET}@db.example.com:6543/app?application_name=me&connect_timeout=7"),
        &e,
    );
    let kv = resolve(
        &format!("host=db.example.com port=6543 user=alice password='{SECRET}' dbname=app application_name=me connect_timeout=7"),
        &e,
    );
    for info in [&url, &kv] {
        assert_eq!(info.targets, vec![tcp("db.example.com", 6543)]);
        assert_eq!(info.user, "alice");
        assert_eq!(info.dbname, "app");
        assert_eq!(info.application_name.as_deref(), Some("me"));
        assert_eq!(info.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(info.sslmode, SslMode::Prefer);
        let (password, source) = info.given_password().expect("password");
        assert_eq!(password.expose(), SECRET);
        assert_eq!(*source, Origin::ConnectionString);
    }
    assert_eq!(url.to_string(), kv.to_string());
}

#[test]
fn libpq_defaults() {
    let info = ConnInfo::resolve(None, &env(&[])).expect("defaults");
    assert_eq!(info.user, "osuser");
    assert_eq!(info.dbname, "osuser", "dbname defaults to the user");
    assert_eq!(info.targets, vec![tcp("localhost", 5432)]);
    assert_eq!(info.sslmode, SslMode::Prefer);
    assert_eq!(info.channel_binding, ChannelBinding::Prefer);
    assert_eq!(info.target_session_attrs, TargetSessionAttrs::Any);
    assert_eq!(info.connect_timeout, None);
    assert!(info.given_password().is_none());
    assert_eq!(info.passfile, None, "no home, no ~/.pgpass");

    // The user given in the string is the default dbname too.
    let info = resolve("postgres://bob@h", &env(&[]));
    assert_eq!(info.dbname, "bob");

    let mut no_user = env(&[]);
    no_user.os_user = None;
    let err = resolve_err(None, &no_user);
    assert!(err.contains("PGUSER"), "{err}");
}

#[test]
fn default_host_is_a_socket_directory_with_a_server() {
    let dir = TempDir::new("sockets");
    let mut e = env(&[]);
    e.socket_dirs = vec![dir.0.join("none"), dir.0.clone()];
    // No socket file for 5432 yet: localhost over TCP.
    assert_eq!(
        resolve("", &e).targets[0].host,
        Host::Tcp("localhost".into())
    );
    dir.file(".s.PGSQL.5432", "", 0o600);
    let info = resolve("dbname=x", &e);
    assert_eq!(info.targets[0].host, Host::Unix(dir.0.clone()));
    assert_eq!(info.targets[0].pgpass_host, "localhost");
    // Another port has no socket there.
    assert_eq!(
        resolve("port=5433", &e).targets[0].host,
        Host::Tcp("localhost".into())
    );
}

#[test]
fn environment_alone() {
    let e = env(&[
        ("PGHOST", "h1,h2"),
        ("PGPORT", "5433,5434"),
        ("PGUSER", "envuser"),
        ("PGPASSWORD", SECRET),
        ("PGDATABASE", "envdb"),
        ("PGSSLMODE", "require"),
        ("PGCONNECT_TIMEOUT", "11"),
        ("PGAPPNAME", "envapp"),
        ("PGTARGETSESSIONATTRS", "read-write"),
        ("PGCHANNELBINDING", "require"),
        ("PGOPTIONS", "-c work_mem=64MB"),
    ]);
    let info = ConnInfo::resolve(None, &e).expect("env");
    assert_eq!(info.targets, vec![tcp("h1", 5433), tcp("h2", 5434)]);
    assert_eq!(info.user, "envuser");
    assert_eq!(info.dbname, "envdb");
    assert_eq!(info.sslmode, SslMode::Require);
    assert_eq!(info.connect_timeout, Some(Duration::from_secs(11)));
    assert_eq!(info.application_name.as_deref(), Some("envapp"));
    assert_eq!(info.target_session_attrs, TargetSessionAttrs::ReadWrite);
    assert_eq!(info.channel_binding, ChannelBinding::Require);
    assert_eq!(info.options.as_deref(), Some("-c work_mem=64MB"));
    let (password, source) = info.given_password().expect("PGPASSWORD");
    assert_eq!(
        (password.expose(), source),
        (SECRET, &Origin::Env("PGPASSWORD"))
    );
}

#[test]
fn environment_fills_in_what_the_string_leaves_out() {
    // libpq: environment variables are defaults for parameters the
    // connection string does not set, URL or not.
    let e = env(&[
        ("PGUSER", "envuser"),
        ("PGPORT", "5999"),
        ("PGSSLMODE", "disable"),
        ("PGDATABASE", "envdb"),
        ("PGPASSWORD", SECRET),
    ]);
    let info = resolve("postgres://db.example.com/app?sslmode=require", &e);
    assert_eq!(info.user, "envuser");
    assert_eq!(info.dbname, "app");
    assert_eq!(info.targets, vec![tcp("db.example.com", 5999)]);
    assert_eq!(info.sslmode, SslMode::Require, "the string wins");
    assert_eq!(
        info.given_password().expect("pw").1,
        &Origin::Env("PGPASSWORD")
    );

    let info = resolve("postgres://u:pw@h:1234", &e);
    assert_eq!(info.dbname, "envdb");
    assert_eq!(info.targets[0].port, 1234);
    assert_eq!(
        info.given_password().expect("pw").1,
        &Origin::ConnectionString
    );

    // An empty variable counts as unset.
    let info = ConnInfo::resolve(None, &env(&[("PGUSER", "")])).expect("empty PGUSER");
    assert_eq!(info.user, "osuser");
}

#[test]
fn multi_host_and_ports() {
    let e = env(&[]);
    let info = resolve("postgres://u@h1:5433,h2,[::1]:5435/db", &e);
    assert_eq!(
        info.targets,
        vec![tcp("h1", 5433), tcp("h2", 5432), tcp("::1", 5435)]
    );
    assert_eq!(
        info.to_string(),
        "postgres://u@h1:5433,h2:5432,[::1]:5435/db?sslmode=prefer"
    );
    let info = resolve("host=h1,h2,h3 port=6000", &e);
    assert!(info.targets.iter().all(|t| t.port == 6000));
    let info = resolve("host=h1,h2 port=6000,", &e);
    assert_eq!(info.targets, vec![tcp("h1", 6000), tcp("h2", 5432)]);
    let err = resolve_err(Some("host=h1,h2,h3 port=1,2"), &e);
    assert!(err.contains("2 port numbers for 3 hosts"), "{err}");
}

#[test]
fn ports_are_checked_without_echoing() {
    let e = env(&[]);
    for text in ["port=0", "port=65536", "port=abc", "port=-1"] {
        let err = resolve_err(Some(text), &e);
        assert!(err.contains("port"), "{err}");
    }
    // A URL whose password holds an unencoded "/" splits in the wrong place
    // (as in libpq); the error must not repeat the fragment.
    let err = resolve_err(Some("postgres://u:hun/ter2@h/db"), &e);
    assert!(!err.contains("hun") && err.contains("%2F"), "{err}");
}

#[test]
fn hostaddr() {
    let e = env(&[]);
    let info = resolve("host=a.example,b.example hostaddr=10.0.0.1,10.0.0.2", &e);
    assert_eq!(
        info.targets[1].hostaddr,
        Some("10.0.0.2".parse().expect("ip"))
    );
    assert_eq!(info.targets[1].pgpass_host, "b.example");
    let info = resolve("hostaddr=10.0.0.9", &e);
    assert_eq!(info.targets[0].host, Host::Tcp("10.0.0.9".into()));
    assert_eq!(
        info.targets[0].pgpass_host, "10.0.0.9",
        "libpq matches hostaddr when no host"
    );
    let err = resolve_err(Some("host=a,b hostaddr=10.0.0.1"), &e);
    assert!(err.contains("2 host names but 1 hostaddr"), "{err}");
    let err = resolve_err(Some("hostaddr=db.example.com"), &e);
    assert!(err.contains("numeric"), "{err}");
}

#[test]
fn unix_sockets() {
    let e = env(&[]);
    let info = resolve("postgresql://%2Fvar%2Frun%2Fpostgresql:5433/db", &e);
    assert_eq!(
        info.targets[0].host,
        Host::Unix("/var/run/postgresql".into())
    );
    assert_eq!(info.targets[0].pgpass_host, "localhost");
    assert_eq!(
        info.to_string(),
        "postgres://osuser@%2Fvar%2Frun%2Fpostgresql:5433/db?sslmode=prefer"
    );
    let info = resolve("host=/srv/pg", &e);
    assert_eq!(info.targets[0].pgpass_host, "/srv/pg");
    assert_eq!(
        info.tls_attempts(&info.targets[0]),
        &[tokio_postgres::config::SslMode::Disable],
        "sslmode is ignored on a Unix socket"
    );
}

#[test]
fn tls_attempts_per_sslmode() {
    use tokio_postgres::config::SslMode as Pg;
    let e = env(&[]);
    for (mode, expected) in [
        ("disable", &[Pg::Disable][..]),
        ("allow", &[Pg::Disable, Pg::Require][..]),
        ("prefer", &[Pg::Prefer, Pg::Disable][..]),
        ("require", &[Pg::Require][..]),
    ] {
        let info = resolve(&format!("host=h sslmode={mode}"), &e);
        assert_eq!(info.tls_attempts(&info.targets[0]), expected, "{mode}");
        assert!(!info.verifies_chain(), "{mode} without a root certificate");
    }
    let err = resolve_err(Some("sslmode=verify_full"), &e);
    assert!(
        err.contains("\"verify_full\"") && err.contains("verify-full"),
        "{err}"
    );
}

#[test]
fn root_certificates() {
    let home = TempDir::new("home");
    let mut e = env(&[]);
    e.home = Some(home.0.clone());

    // verify-* need a root certificate; the message names both fixes.
    for mode in ["verify-ca", "verify-full"] {
        let err = resolve_err(Some(&format!("host=h sslmode={mode}")), &e);
        assert!(err.contains("sslrootcert=FILE"), "{err}");
        assert!(err.contains("sslrootcert=system"), "{err}");
        assert!(err.contains(".postgresql/root.crt"), "{err}");
    }
    // An explicit file must exist.
    let err = resolve_err(Some("host=h sslrootcert=/nonexistent/ca.pem"), &e);
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("sslrootcert"),
        "{err}"
    );

    // The default ~/.postgresql/root.crt, when it exists, is used and turns
    // on verification in require (and prefer) as libpq does.
    let root = home.file(".postgresql/root.crt", "PEM", 0o644);
    let info = resolve("host=h sslmode=require", &e);
    assert_eq!(info.rootcert, Some(RootCert::File(root.clone())));
    assert!(info.verifies_chain());
    let info = resolve("host=h sslmode=verify-full", &e);
    assert_eq!(info.rootcert, Some(RootCert::File(root)));
    // ... but not with sslmode=disable.
    let info = resolve("host=h sslmode=disable", &e);
    assert_eq!(info.rootcert, None);
    assert!(!info.verifies_chain());
}

#[test]
fn system_roots_require_verify_full() {
    let e = env(&[]);
    let info = resolve("host=h sslrootcert=system", &e);
    assert_eq!(
        info.sslmode,
        SslMode::VerifyFull,
        "libpq's default with system roots"
    );
    assert_eq!(info.rootcert, Some(RootCert::System));
    assert_eq!(
        resolve("host=h sslrootcert=system sslmode=verify-full", &e).sslmode,
        SslMode::VerifyFull
    );
    for weak in ["disable", "prefer", "require", "verify-ca"] {
        let err = resolve_err(
            Some(&format!("host=h sslrootcert=system sslmode={weak}")),
            &e,
        );
        assert!(err.contains(weak) && err.contains("verify-full"), "{err}");
    }
}

#[test]
fn client_certificates() {
    let home = TempDir::new("client");
    let mut e = env(&[]);
    e.home = Some(home.0.clone());
    assert_eq!(resolve("host=h", &e).client_cert, None, "no default files");

    let cert = home.file(".postgresql/postgresql.crt", "PEM", 0o644);
    let err = resolve_err(Some("host=h"), &e);
    assert!(
        err.contains("postgresql.key") && err.contains("sslkey"),
        "{err}"
    );
    let key = home.file(".postgresql/postgresql.key", "PEM", 0o600);
    assert_eq!(
        resolve("host=h", &e).client_cert,
        Some(ClientCert {
            cert: cert.clone(),
            key,
            key_password: None,
        })
    );
    let other_key = home.file("other.key", "PEM", 0o600);
    let info = resolve(&format!("host=h sslkey={}", other_key.display()), &e);
    assert_eq!(info.client_cert.expect("cert").key, other_key);
    let err = resolve_err(Some("host=h sslcert=/nonexistent.crt"), &e);
    assert!(err.contains("/nonexistent.crt"), "{err}");
    // Not even looked at without TLS.
    assert_eq!(
        resolve("host=h sslmode=disable sslcert=/nonexistent.crt", &e).client_cert,
        None
    );
}

#[test]
fn verify_full_needs_a_host_name() {
    let dir = TempDir::new("ca");
    let ca = dir.file("ca.pem", "PEM", 0o644);
    let e = env(&[]);
    let err = resolve_err(
        Some(&format!(
            "hostaddr=10.1.2.3 sslmode=verify-full sslrootcert={}",
            ca.display()
        )),
        &e,
    );
    assert!(
        err.contains("host=NAME") && err.contains("10.1.2.3"),
        "{err}"
    );
    let info = resolve(
        &format!(
            "host=db.example hostaddr=10.1.2.3 sslmode=verify-full sslrootcert={}",
            ca.display()
        ),
        &e,
    );
    assert_eq!(info.targets[0].host, Host::Tcp("db.example".into()));
    // An IP given as host is checked against the certificate's IP names.
    resolve(
        &format!(
            "host=10.1.2.3 sslmode=verify-full sslrootcert={}",
            ca.display()
        ),
        &e,
    );
}

#[test]
fn channel_binding_and_target_session_attrs() {
    let e = env(&[]);
    let err = resolve_err(Some("sslmode=disable channel_binding=require"), &e);
    assert!(err.contains("sslmode=require"), "{err}");
    for (text, attrs) in [
        ("any", TargetSessionAttrs::Any),
        ("read-write", TargetSessionAttrs::ReadWrite),
        ("read-only", TargetSessionAttrs::ReadOnly),
        ("primary", TargetSessionAttrs::Primary),
        ("standby", TargetSessionAttrs::Standby),
        ("prefer-standby", TargetSessionAttrs::PreferStandby),
    ] {
        let info = resolve(&format!("target_session_attrs={text}"), &e);
        assert_eq!(info.target_session_attrs, attrs);
    }
    let err = resolve_err(Some("target_session_attrs=master"), &e);
    assert!(
        err.contains("\"master\"") && err.contains("read-write"),
        "{err}"
    );
    let info = resolve("postgres://u@h1,h2/db?target_session_attrs=read-write", &e);
    assert!(
        info.to_string()
            .ends_with("&target_session_attrs=read-write"),
        "{info}"
    );
}

#[test]
fn connect_timeout_like_libpq() {
    let e = env(&[]);
    assert_eq!(resolve("connect_timeout=0", &e).connect_timeout, None);
    assert_eq!(resolve("connect_timeout=-5", &e).connect_timeout, None);
    assert_eq!(
        resolve("connect_timeout=1", &e).connect_timeout,
        Some(Duration::from_secs(2))
    );
    let err = resolve_err(Some("connect_timeout=ten"), &e);
    assert!(
        err.contains("connect_timeout") && err.contains("integer"),
        "{err}"
    );

    let ten = Duration::from_secs(10);
    let info = resolve("host=h", &e).with_default_connect_timeout(ten);
    assert_eq!(info.connect_timeout, Some(ten));
    let info = resolve("connect_timeout=3", &e).with_default_connect_timeout(ten);
    assert_eq!(
        info.connect_timeout,
        Some(Duration::from_secs(3)),
        "the string wins"
    );
}

#[test]
fn keepalives() {
    let e = env(&[]);
    let k = resolve("host=h", &e).keepalives;
    assert!(k.enabled);
    assert_eq!(k.idle, DEFAULT_KEEPALIVES_IDLE);
    assert_eq!(k.user_timeout, Some(Duration::from_secs(30)));
    let k = resolve(
        "keepalives_idle=60 keepalives_interval=10 keepalives_count=6 tcp_user_timeout=2500",
        &e,
    )
    .keepalives;
    assert_eq!(
        (k.idle, k.interval, k.count, k.user_timeout),
        (
            Duration::from_secs(60),
            Duration::from_secs(10),
            6,
            Some(Duration::from_millis(2500))
        )
    );
    let k = resolve("keepalives=0", &e).keepalives;
    assert!(!k.enabled);
    assert_eq!(k.user_timeout, None);
}

#[test]
fn config_for_one_target() {
    use tokio_postgres::config::{Host as PgHost, SslMode as Pg};
    let info = resolve(
        "host=h1,h2 port=5433,5434 user=u dbname=d options='-c search_path=x' fallback_application_name=fb keepalives_idle=20",
        &env(&[]),
    );
    let config = info.config_for(&info.targets[1], Pg::Require);
    assert_eq!(config.get_hosts(), &[PgHost::Tcp("h2".into())]);
    assert_eq!(config.get_ports(), &[5434]);
    assert_eq!(config.get_user(), Some("u"));
    assert_eq!(config.get_dbname(), Some("d"));
    assert_eq!(config.get_options(), Some("-c search_path=x"));
    assert_eq!(config.get_application_name(), Some("fb"));
    assert_eq!(config.get_ssl_mode(), Pg::Require);
    assert_eq!(config.get_keepalives_idle(), Duration::from_secs(20));
    assert_eq!(
        config.get_password(),
        None,
        "added per host at connect time"
    );
    let info = resolve(
        "application_name=mine fallback_application_name=fb",
        &env(&[]),
    );
    let config = info.config_for(&info.targets[0], Pg::Prefer);
    assert_eq!(config.get_application_name(), Some("mine"));
}

#[test]
fn password_file_per_host() {
    let dir = TempDir::new("pgpass");
    let passfile = dir.file(
        "pgpass",
        &format!(
            "# relink\nh1:5432:app:alice:one\nh2:*:app:alice:{SECRET}\nlocalhost:5432:*:*:local\n"
        ),
        0o600,
    );
    let e = env(&[("PGPASSFILE", passfile.to_str().expect("utf-8"))]);
    let info = resolve("host=h1,h2,h3 user=alice dbname=app", &e);
    let pw = |i: usize| {
        info.password_for(&info.targets[i])
            .expect("lookup")
            .map(|(p, s)| (p.expose().to_owned(), s))
    };
    assert_eq!(
        pw(0),
        Some(("one".into(), Origin::PasswordFile(passfile.clone())))
    );
    assert_eq!(pw(1).map(|p| p.0), Some(SECRET.into()));
    assert_eq!(pw(2), None);

    // The default socket directory matches "localhost".
    let info = resolve("host=/var/run/postgresql user=x", &e);
    assert_eq!(
        info.password_for(&info.targets[0])
            .expect("lookup")
            .map(|p| p.0.expose().to_owned()),
        Some("local".into())
    );

    // A given password wins; an empty one means none.
    let info = resolve("postgres://alice:given@h1/app", &e);
    assert_eq!(
        info.password_for(&info.targets[0])
            .expect("given")
            .map(|p| p.1),
        Some(Origin::ConnectionString)
    );
    let info = resolve("postgres://alice:@h1/app", &e);
    assert_eq!(info.given_password(), None);
    assert_eq!(
        info.password_for(&info.targets[0])
            .expect("file")
            .map(|p| p.0.expose().to_owned()),
        Some("one".into())
    );

    // The passfile parameter beats PGPASSFILE; ~/.pgpass is the default.
    let other = dir.file("other", "*:*:*:*:other\n", 0o600);
    let info = resolve(&format!("host=h1 passfile={}", other.display()), &e);
    assert_eq!(info.passfile.as_deref(), Some(other.as_path()));
    let mut home_env = env(&[]);
    home_env.home = Some(dir.0.clone());
    assert_eq!(
        ConnInfo::resolve(None, &home_env).expect("home").passfile,
        Some(dir.0.join(".pgpass"))
    );
}

#[test]
fn password_file_open_to_others_is_refused() {
    let dir = TempDir::new("pgpass-open");
    let passfile = dir.file("pgpass", &format!("*:*:*:*:{SECRET}\n"), 0o644);
    let e = env(&[("PGPASSFILE", passfile.to_str().expect("utf-8"))]);
    let info = resolve("host=h", &e);
    let err = info
        .password_for(&info.targets[0])
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains(&format!("chmod 600 {}", passfile.display())),
        "{err}"
    );
    assert!(err.contains("0644"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    // A given password never reads the file.
    let info = resolve("host=h password=x", &e);
    assert!(info.password_for(&info.targets[0]).is_ok());
}

#[test]
fn the_password_never_shows() {
    let e = env(&[("PGPASSWORD", SECRET)]);
    let good = [
        format!("postgres://alice:{SECRET}@h/db"),
        format!("postgresql://alice:{SECRET}@h1:1,h2:2/db?sslmode=require"),
        format!("host=h password='{SECRET}'"),
        format!("host=h password={SECRET} sslmode=allow"),
        "host=h".to_owned(),
    ];
    for text in &good {
        let info = resolve(text, &e);
        for shown in [
            info.to_string(),
            format!("{info:?}"),
            format!("{:?}", info.targets),
        ] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("S3CRET"), "{shown}");
        }
        let (password, _) = info.given_password().expect("password");
        assert!(!format!("{password:?}").contains(SECRET));
    }
    let bad = [
        format!("postgres://alice:{SECRET}@h/db?colour=blue"),
        format!("postgres://alice:{SECRET}@h:port/db"),
        format!("postgres://alice:{SECRET}@h/db?sslmode=bogus"),
        format!("postgres://alice:{SECRET}@h/db?sslcrl=x"),
        format!("postgres://alice:{SECRET}@h/db?hostaddr=nope"),
        format!("postgres://alice:{SECRET}@h/db?sslrootcert=/nonexistent"),
        format!("postgres://alice:{SECRET}@h/db?sslmode=verify-full"),
        format!("postgres://alice:{SECRET}%ZZ@h/db"),
        format!("postgres://alice:{SECRET}@x@h/db"),
        format!("postgres:/alice:{SECRET}@h/db"),
        format!("host=h password='{SECRET}"),
        format!("host=h password={SECRET} {SECRET}"),
        format!("host=h password={SECRET} port=0"),
        format!("host=h password={SECRET} channel_binding=require sslmode=disable"),
    ];
    for text in &bad {
        let err = resolve_err(Some(text), &e);
        assert!(!err.contains("S3CRET"), "{text} → {err}");
    }
}

#[test]
fn display_is_a_redacted_url() {
    let dir = TempDir::new("display");
    let ca = dir.file("ca.pem", "PEM", 0o644);
    let info = resolve(
        &format!(
            "postgres://al%40ice:{SECRET}@db.example.com/my%2Fdb?sslmode=verify-ca&sslrootcert={}",
            ca.display()
        ),
        &env(&[]),
    );
    assert_eq!(
        info.to_string(),
        "postgres://al%40ice@db.example.com:5432/my%2Fdb?sslmode=verify-ca"
    );
}

#[test]
fn a_service_fills_in_between_the_string_and_the_environment() {
    let dir = TempDir::new("service");
    let file = dir.file(
        "services.conf",
        &format!(
            "[app]\nhost=svc-host\nport=6543\nuser=svc-user\ndbname=svc-db\npassword={SECRET}\nsslmode=require\n[bad]\nsslmode=verify_full\n"
        ),
        0o644,
    );
    let path = file.display().to_string();
    let env = env(&[
        ("PGSERVICEFILE", path.as_str()),
        ("PGHOST", "env-host"),
        ("PGPORT", "1"),
        ("PGCONNECT_TIMEOUT", "7"),
    ]);
    // The string wins over the service, the service over the environment,
    // the environment fills in what neither sets.
    let info = resolve("service=app port=7777", &env);
    assert_eq!(info.targets, vec![tcp("svc-host", 7777)]);
    assert_eq!(
        (info.user.as_str(), info.dbname.as_str()),
        ("svc-user", "svc-db")
    );
    assert_eq!(info.sslmode, SslMode::Require);
    assert_eq!(info.connect_timeout, Some(Duration::from_secs(7)));
    assert_eq!(info.service, Some(("app".to_owned(), file.clone())));
    let (password, source) = info.given_password().expect("the service's password");
    assert_eq!(password.expose(), SECRET);
    assert_eq!(
        source,
        &Origin::ServiceFile {
            service: "app".to_owned(),
            file: file.clone()
        }
    );
    assert!(!format!("{info:?} {info}").contains(SECRET));
    // PGSERVICE names it as well; a URL can too.
    let with_env = {
        let mut vars = vec![("PGSERVICE", "app"), ("PGSERVICEFILE", path.as_str())];
        vars.push(("PGPORT", "1"));
        super::tests::env(&vars)
    };
    assert_eq!(
        ConnInfo::resolve(None, &with_env)
            .expect("resolves")
            .targets,
        vec![tcp("svc-host", 6543)]
    );
    assert_eq!(
        resolve("postgres:///other?service=app", &env).dbname,
        "other"
    );
    // A bad value names the service and its file.
    let err = resolve_err(Some("service=bad"), &env);
    assert!(
        err.contains("\"sslmode\"") && err.contains("service \"bad\" in") && err.contains(&path),
        "{err}"
    );
    let err = resolve_err(Some("service=nope"), &env);
    assert!(
        err.contains("definition of service \"nope\" not found"),
        "{err}"
    );
}

#[test]
fn sslsni_and_revocation_lists() {
    let dir = TempDir::new("crl");
    let crl = dir.file("root.crl", "x", 0o644);
    let env = env(&[]);
    assert!(resolve("host=h sslmode=require", &env).sslsni);
    assert!(!resolve("host=h sslmode=require sslsni=0", &env).sslsni);
    assert!(resolve_err(Some("host=h sslsni=on"), &env).contains("expected 1 or 0"));
    let info = resolve(
        &format!(
            "host=h sslmode=require sslcrl={} sslcrldir={}",
            crl.display(),
            dir.0.display()
        ),
        &env,
    );
    assert_eq!(info.revocations.file.as_deref(), Some(crl.as_path()));
    assert_eq!(info.revocations.dir.as_deref(), Some(dir.0.as_path()));
    let err = resolve_err(
        Some("host=h sslmode=require sslcrldir=/nonexistent/crls"),
        &env,
    );
    assert!(
        err.contains("sslcrldir") && err.contains("/nonexistent/crls"),
        "{err}"
    );
    // ~/.postgresql/root.crl by default, when it exists (libpq's default).
    let home = TempDir::new("crl-home");
    let mut with_home = env.clone();
    with_home.home = Some(home.0.clone());
    assert!(resolve("host=h sslmode=require", &with_home)
        .revocations
        .is_empty());
    let default = home.file(".postgresql/root.crl", "x", 0o644);
    assert_eq!(
        resolve("host=h sslmode=require", &with_home)
            .revocations
            .file,
        Some(default)
    );
}
