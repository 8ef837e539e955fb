//! Where to connect: the database a command names (`--database-url`,
//! `DATABASE_URL` or libpq's environment) and each `--replica`, resolved
//! once, before anything connects, with libpq's rules (`connect`).

use std::fmt;
use std::time::Duration;

use anyhow::Result;

use super::connect::{ConnInfo, Env};

/// libpq's parameters, environment and defaults, resolved once.
/// `Display` is redacted (no password), so it is safe in logs and error
/// messages.
#[derive(Clone)]
pub struct Database {
    pub info: ConnInfo,
}

impl Database {
    /// Resolves a URL or key=value string, or with none libpq's environment
    /// (`PGHOST`, `PGUSER`, …), as `psql` would. `connect_timeout` applies
    /// unless the string or `PGCONNECT_TIMEOUT` sets one.
    ///
    /// # Errors
    /// When the parameters cannot be used; the message names the parameter
    /// and never repeats the password.
    pub fn resolve(text: Option<&str>, connect_timeout: Duration) -> Result<Self> {
        let text = text.filter(|t| !t.trim().is_empty());
        let info = ConnInfo::resolve(text, &Env::from_process())
            .map_err(anyhow::Error::new)?
            .with_default_connect_timeout(connect_timeout);
        Ok(Self { info })
    }

    /// `host:port/dbname` (hosts comma-separated when several are listed),
    /// for the `database` label of metrics: which database a series is
    /// about, never who connected (no user, no password).
    pub fn label(&self) -> String {
        let hosts: Vec<String> = self.info.targets.iter().map(ToString::to_string).collect();
        format!("{}/{}", hosts.join(","), self.info.dbname)
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.info.fmt(f)
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_display_hides_the_password() {
        let db = Database::resolve(
            Some("postgres://alice:s3cret@db.example:6543/app?sslmode=disable"),
            Duration::from_secs(1),
        )
        .expect("parses");
        assert!(
            db.to_string()
                .starts_with("postgres://alice@db.example:6543/app"),
            "{db}"
        );
        assert!(!format!("{db:?}").contains("s3cret"));
        let db = Database::resolve(
            Some("host=h user=u password=s3cret dbname=d sslmode=disable"),
            Duration::from_secs(1),
        )
        .expect("parses");
        assert!(!db.to_string().contains("s3cret"));
    }

    #[test]
    fn the_database_label_names_hosts_ports_and_database_only() {
        let label = |url: &str| {
            Database::resolve(Some(url), Duration::from_secs(1))
                .expect("parses")
                .label()
        };
        assert_eq!(
            label("postgres://alice:s3cret@db.example:6543/app?sslmode=disable"),
            "db.example:6543/app"
        );
        assert_eq!(
            label("postgres://u@h1,h2:5433,[::1]/app?sslmode=disable"),
            "h1:5432,h2:5433,[::1]:5432/app"
        );
        assert_eq!(
            label("host=/var/run/pg port=5433 user=u password=s3cret dbname=d sslmode=disable"),
            "/var/run/pg:5433/d"
        );
    }
}
