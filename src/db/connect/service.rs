//! Connection service files (libpq's `pg_service.conf`): named groups of
//! connection parameters. libpq's lookup (libpq-pgservice.html,
//! `parseServiceInfo`): the service named by `service=` in the connection
//! string, else `PGSERVICE`; looked up first in the user's file —
//! `servicefile=` (libpq 18), else `PGSERVICEFILE`, else
//! `~/.pg_service.conf` — then in the system-wide `pg_service.conf` of
//! `PGSYSCONFDIR` (without it, the directory Debian's libpq is built
//! with). A file that does not exist is skipped; the first file holding the
//! service is used, and within its section the first line of a parameter
//! wins. The caller lets parameters given in the connection string win over
//! the service's, and the service's over the environment's.
//!
//! Each line is `key=value` (relink also trims blanks around both), `#`
//! starts a comment line, `[name]` starts a section. LDAP lookups (`ldap://`
//! lines) are not supported and say so.

use std::path::{Path, PathBuf};

use super::params::{self, Params};
use super::{ConnInfoError, Env};

/// Where libpq looks for the system-wide file when `PGSYSCONFDIR` is not
/// set: the `sysconfdir` Debian's and Ubuntu's libpq are built with
/// (`pg_config --sysconfdir`).
pub const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// A service found: its parameters and the file they came from.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub file: PathBuf,
    pub params: Params,
}

/// Finds service `name`; `servicefile` is the `servicefile` parameter of
/// the connection string, if any.
///
/// # Errors
/// When no file defines the service, or the file that does cannot be read
/// or holds a line relink cannot use.
pub fn lookup(name: &str, servicefile: Option<&str>, env: &Env) -> Result<Service, ConnInfoError> {
    let user_file = servicefile
        .map(PathBuf::from)
        .or_else(|| env.var("PGSERVICEFILE").map(PathBuf::from))
        .or_else(|| env.home.as_ref().map(|h| h.join(".pg_service.conf")));
    let system_file =
        Path::new(env.var("PGSYSCONFDIR").unwrap_or(DEFAULT_SYSCONFDIR)).join("pg_service.conf");
    let mut searched = Vec::new();
    for file in user_file.into_iter().chain([system_file]) {
        if !file.exists() {
            searched.push(file);
            continue;
        }
        let text = std::fs::read_to_string(&file).map_err(|source| {
            ConnInfoError::ServiceFileUnreadable {
                path: file.clone(),
                source,
            }
        })?;
        if let Some(params) = section(&text, name, &file)? {
            return Ok(Service {
                name: name.to_owned(),
                file,
                params,
            });
        }
        searched.push(file);
    }
    Err(ConnInfoError::ServiceNotFound {
        name: name.to_owned(),
        searched,
    })
}

/// The parameters of section `[name]` of a service file, or None if the
/// file has no such section.
fn section(text: &str, name: &str, file: &Path) -> Result<Option<Params>, ConnInfoError> {
    let mut params = Params::new();
    let mut inside = false;
    let mut found = false;
    let problem = |line: usize, problem: String| ConnInfoError::ServiceFile {
        path: file.to_path_buf(),
        line,
        problem,
    };
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if found {
                // The end of the service's section.
                break;
            }
            inside = header.strip_suffix(']').map(str::trim) == Some(name)
                || header.split_once(']').map(|(n, _)| n) == Some(name);
            found = inside;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with("ldap") {
            return Err(problem(
                number,
                "LDAP lookups of connection parameters are not supported by relink: put the parameters in the service file".to_owned(),
            ));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(problem(
                number,
                "syntax error (expected key=value)".to_owned(),
            ));
        };
        let key = key.trim();
        if key == "service" || key == "servicefile" {
            return Err(problem(
                number,
                format!("nested {key} specifications are not supported"),
            ));
        }
        let keyword = params::keyword(key).map_err(|err| problem(number, err.to_string()))?;
        params
            .entry(keyword)
            .or_insert_with(|| value.trim().to_owned());
    }
    Ok(found.then_some(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::connect::tests::TempDir;

    fn env_for(dir: &TempDir, vars: &[(&str, &str)]) -> Env {
        let mut env = Env::from_vars(vars.iter().copied());
        env.home = Some(dir.0.join("home"));
        env
    }

    #[test]
    fn sections_first_value_wins_and_comments() {
        let dir = TempDir::new("svc-parse");
        let text = "# comment\n[other]\nhost=wrong\n\n[db]\n  host = h1 \nport=6543\nhost=h2\n# c\n[next]\nuser=x\n";
        let file = dir.file("f.conf", text, 0o644);
        let params = section(text, "db", &file).expect("parses").expect("found");
        assert_eq!(params.get("host").map(String::as_str), Some("h1"));
        assert_eq!(params.get("port").map(String::as_str), Some("6543"));
        assert!(!params.contains_key("user"));
        assert!(section(text, "missing", &file).expect("parses").is_none());
        // A prefix of a section's name is not the section.
        assert!(section("[dbx]\nhost=a\n", "db", &file)
            .expect("parses")
            .is_none());
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let dir = TempDir::new("svc-bad");
        let file = dir.file("f.conf", "", 0o644);
        for (text, needle) in [
            ("[db]\nhost\n", "line 2: syntax error"),
            ("[db]\nservice=x\n", "nested service"),
            ("[db]\nservicefile=/x\n", "nested servicefile"),
            (
                "[db]\ncolour=blue\n",
                "unknown connection parameter \"colour\"",
            ),
            ("[db]\nldap://ldap.example/dc=x?y\n", "LDAP"),
        ] {
            let err = section(text, "db", &file).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains(&file.display().to_string()), "{err}");
        }
        // A bad line of another section does not matter.
        assert!(section("[x]\nbad line\n[db]\nhost=h\n", "db", &file).is_ok());
    }

    #[test]
    fn user_file_then_system_file() {
        let dir = TempDir::new("svc-files");
        let sys = dir.0.join("sys");
        dir.file(
            "sys/pg_service.conf",
            "[a]\nhost=sys-a\n[b]\nhost=sys-b\n",
            0o644,
        );
        dir.file("home/.pg_service.conf", "[a]\nhost=home-a\n", 0o644);
        let explicit = dir.file("explicit.conf", "[a]\nhost=explicit-a\n", 0o644);
        let sysdir = sys.display().to_string();
        let env = env_for(&dir, &[("PGSYSCONFDIR", &sysdir)]);
        let host = |s: &Service| s.params.get("host").cloned().unwrap_or_default();
        assert_eq!(host(&lookup("a", None, &env).expect("a")), "home-a");
        // Not in the user's file: the system-wide one.
        let b = lookup("b", None, &env).expect("b");
        assert_eq!(host(&b), "sys-b");
        assert_eq!(b.file, sys.join("pg_service.conf"));
        let explicit_text = explicit.display().to_string();
        let env = env_for(
            &dir,
            &[("PGSYSCONFDIR", &sysdir), ("PGSERVICEFILE", &explicit_text)],
        );
        assert_eq!(host(&lookup("a", None, &env).expect("a")), "explicit-a");
        // servicefile= wins over PGSERVICEFILE.
        let home_file = dir.0.join("home/.pg_service.conf").display().to_string();
        assert_eq!(
            host(&lookup("a", Some(&home_file), &env).expect("a")),
            "home-a"
        );
        let err = lookup("nope", None, &env).expect_err("missing").to_string();
        assert!(
            err.contains("\"nope\"") && err.contains(&explicit_text) && err.contains(&sysdir),
            "{err}"
        );
    }
}
