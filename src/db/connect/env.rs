//! What libpq reads from the process besides the connection string: the
//! `PG*` environment variables, the home directory (for `~/.pgpass` and
//! `~/.postgresql/`), the operating-system user (the default user name) and
//! the default Unix socket directories. Captured once into a value so that
//! resolution stays a pure function and tests can inject their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where libpq builds look for the server's socket by default, in the order
/// relink tries them: Debian's and Red Hat's packages use
/// `/var/run/postgresql`, upstream builds (and macOS installs) use `/tmp`.
pub const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/tmp"];

/// A snapshot of the process environment as libpq would read it.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// The home directory: `HOME`, else the passwd entry of this user.
    pub home: Option<PathBuf>,
    /// The operating-system user name: the passwd entry of this process's
    /// effective uid (what libpq uses; through the `whoami` crate), else
    /// `USER`, else `LOGNAME`.
    pub os_user: Option<String>,
    /// Candidate default socket directories (normally
    /// [`DEFAULT_SOCKET_DIRS`]); the first holding `.s.PGSQL.<port>` is the
    /// default host.
    pub socket_dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for Env {
    // PGPASSWORD is in `vars`: show only which variables are set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("home", &self.home)
            .field("os_user", &self.os_user)
            .field("socket_dirs", &self.socket_dirs)
            .finish()
    }
}

impl Env {
    /// The current process's environment, home directory and user.
    pub fn from_process() -> Self {
        let vars: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("PG") || k == "HOME" || k == "USER" || k == "LOGNAME")
            .collect();
        let home = vars
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            // The standard library's fallback is the passwd entry's home.
            .or_else(|| std::env::home_dir().filter(|h| !h.as_os_str().is_empty()));
        let os_user = whoami::username()
            .ok()
            .or_else(|| vars.get("USER").cloned())
            .or_else(|| vars.get("LOGNAME").cloned())
            .filter(|u| !u.is_empty());
        Self {
            vars,
            home,
            os_user,
            socket_dirs: DEFAULT_SOCKET_DIRS.iter().map(PathBuf::from).collect(),
        }
    }

    /// An environment made of `vars` only, for tests: no home, no OS user,
    /// no socket directory unless set on the value.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..Self::default()
        }
    }

    /// A variable's value; an empty value counts as unset, as in libpq.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `~/.postgresql/<file>`, where libpq looks for certificates.
    pub fn dot_postgresql(&self, file: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(".postgresql").join(file))
    }

    /// The default socket directory for `port`: the first candidate holding
    /// the server's socket file.
    pub fn default_socket_dir(&self, port: u16) -> Option<&Path> {
        self.socket_dirs
            .iter()
            .find(|dir| dir.join(format!(".s.PGSQL.{port}")).exists())
            .map(PathBuf::as_path)
    }

    /// Whether `dir` is one of the default socket directories (for the
    /// password file, where such a socket matches `localhost`).
    pub fn is_default_socket_dir(&self, dir: &Path) -> bool {
        DEFAULT_SOCKET_DIRS.iter().any(|d| Path::new(d) == dir)
            || self.socket_dirs.iter().any(|d| d == dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_variables_count_as_unset_and_debug_hides_values() {
        let env = Env::from_vars([("PGHOST", ""), ("PGPASSWORD", "hunter2")]);
        assert_eq!(env.var("PGHOST"), None);
        assert_eq!(env.var("PGPASSWORD"), Some("hunter2"));
        assert!(!format!("{env:?}").contains("hunter2"));
    }

    #[test]
    fn process_env_has_a_user() {
        // Whatever the machine, the process runs as someone.
        let env = Env::from_process();
        assert!(env.os_user.is_some(), "{env:?}");
    }
}
