//! Where a connection parameter's value came from, kept with the value so
//! that a message can say where to fix it ("invalid value … (from
//! PGSSLMODE)", "password authentication failed … with the password from
//! the password file ~/.pgpass").

use std::fmt;
use std::path::PathBuf;

/// The origin of one parameter's value, in libpq's order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The URL or `key=value` string.
    ConnectionString,
    /// A connection service's section (`service=`, `PGSERVICE`).
    ServiceFile { service: String, file: PathBuf },
    /// A libpq environment variable, by name (`PGSSLMODE`, `PGPASSWORD`).
    Env(&'static str),
    /// A line of the password file.
    PasswordFile(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectionString => f.write_str("the connection string"),
            Self::ServiceFile { service, file } => {
                write!(f, "service \"{service}\" in {}", file.display())
            }
            Self::Env(var) => f.write_str(var),
            Self::PasswordFile(path) => write!(f, "the password file {}", path.display()),
        }
    }
}
