//! The password file (`PGPASSFILE`, else `~/.pgpass`) in libpq's format:
//! `hostname:port:database:username:password` per line, `*` as a whole field
//! matches anything, `\:` and `\\` escape, lines starting with `#` are
//! comments, and the first matching line wins.
//!
//! One deliberate difference: libpq ignores a file that group or others can
//! read or write (with a warning on stderr that a batch job's log easily
//! hides); relink refuses it with an error naming the file and the fix, so
//! a password never silently goes missing.

use std::path::{Path, PathBuf};

use super::ConnInfoError;

/// What the file is matched against: the host as libpq spells it for the
/// password file (`localhost` for the default socket directory), the port,
/// the database and the user.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// Looks `key` up in the password file at `path`.
///
/// Returns `Ok(None)` when the file does not exist, is not a regular file
/// (libpq ignores those too; `PGPASSFILE=/dev/null` is a common way to turn
/// the file off) or has no matching line.
///
/// # Errors
/// When the file is readable or writable by group or others, or cannot be
/// read.
pub fn lookup(path: &Path, key: Key<'_>) -> Result<Option<String>, ConnInfoError> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    // S_IRWXG | S_IRWXO, the bits libpq checks.
    if meta.mode() & 0o077 != 0 {
        return Err(ConnInfoError::PasswordFilePermissions {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o777,
        });
    }
    let text = std::fs::read(path).map_err(|source| ConnInfoError::PasswordFileUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(find(&String::from_utf8_lossy(&text), key))
}

/// The password of the first line of `text` that matches `key`.
pub fn find(text: &str, key: Key<'_>) -> Option<String> {
    let port = key.port.to_string();
    let wanted = [key.host, &port, key.dbname, key.user];
    text.lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| {
            let mut rest = line;
            for value in wanted {
                rest = match_field(rest, value)?;
            }
            Some(unescape_password(rest))
        })
}

/// libpq's `pwdfMatchesString`: whether the field at the start of `line`
/// equals `value` (or is exactly `*`); returns what follows its `:`.
fn match_field<'a>(line: &'a str, value: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let mut field = String::new();
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => field.push(escaped),
                None => return None,
            },
            ':' => return (field == value).then(|| &line[i + 1..]),
            _ => field.push(c),
        }
    }
    // A line with fewer than five fields matches nothing.
    None
}

/// The password field: up to the next unescaped `:` (libpq stops there too),
/// with `\x` turned into `x`.
fn unescape_password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => out.push('\\'),
            },
            ':' => break,
            _ => out.push(c),
        }
    }
    out
}

/// The password file libpq would read: the `passfile` parameter, else
/// `PGPASSFILE`, else `~/.pgpass`.
pub fn default_path(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|h| h.join(".pgpass"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key<'static> = Key {
        host: "db.example.com",
        port: 5432,
        dbname: "app",
        user: "alice",
    };

    #[test]
    fn exact_match_and_first_match_wins() {
        let text = "db.example.com:5432:app:alice:first\ndb.example.com:5432:app:alice:second\n";
        assert_eq!(find(text, KEY).as_deref(), Some("first"));
    }

    #[test]
    fn wildcards_and_order() {
        let text = "# comment\n\nother:5432:app:alice:no\n*:5432:*:alice:yes\n*:*:*:*:fallback\n";
        assert_eq!(find(text, KEY).as_deref(), Some("yes"));
        let bob = Key { user: "bob", ..KEY };
        assert_eq!(find(text, bob).as_deref(), Some("fallback"));
    }

    #[test]
    fn star_only_as_a_whole_field() {
        // "db*" is a literal, not a pattern, in libpq.
        assert_eq!(find("db*:*:*:*:x\n", KEY), None);
        // An escaped star matches a literal "*".
        let star = Key { dbname: "*", ..KEY };
        assert_eq!(find("*:*:\\*:*:lit\n", star).as_deref(), Some("lit"));
        assert_eq!(find("*:*:\\*:*:lit\n", KEY), None);
    }

    #[test]
    fn escapes_in_fields_and_password() {
        let key = Key {
            host: "h:1",
            dbname: "a\\b",
            ..KEY
        };
        let text = "h\\:1:5432:a\\\\b:alice:p\\:w\\\\d\\x:ignored\n";
        assert_eq!(find(text, key).as_deref(), Some("p:w\\dx"));
    }

    #[test]
    fn crlf_comments_and_short_lines() {
        let text = "#db.example.com:5432:app:alice:commented\r\ndb.example.com:5432\r\ndb.example.com:5432:app:alice:crlf\r\n";
        assert_eq!(find(text, KEY).as_deref(), Some("crlf"));
    }

    #[test]
    fn port_is_compared_as_text() {
        let key = Key { port: 6543, ..KEY };
        assert_eq!(
            find("*:5432:*:*:a\n*:6543:*:*:b\n", key).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn empty_password_field() {
        assert_eq!(find("*:*:*:*:\n", KEY).as_deref(), Some(""));
    }

    fn temp_file(name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!(
            "relink-pgpass-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, text).expect("write temp file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn file_lookup_and_permissions() {
        let good = temp_file("good", "*:*:*:alice:s3cret-pass\n", 0o600);
        assert_eq!(
            lookup(&good, KEY).expect("lookup").as_deref(),
            Some("s3cret-pass")
        );
        let bob = Key { user: "bob", ..KEY };
        assert_eq!(lookup(&good, bob).expect("lookup"), None);

        for mode in [0o640, 0o604, 0o660, 0o644, 0o610] {
            let open = temp_file(&format!("open{mode:o}"), "*:*:*:*:s3cret-pass\n", mode);
            let err = lookup(&open, KEY).expect_err("must refuse");
            let text = err.to_string();
            assert!(text.contains(&open.display().to_string()), "{text}");
            assert!(
                text.contains(&format!("chmod 600 {}", open.display())),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
            std::fs::remove_file(&open).ok();
        }
        std::fs::remove_file(&good).ok();
    }

    #[test]
    fn missing_file_and_non_regular_file_are_ignored() {
        let missing = std::env::temp_dir().join("relink-pgpass-does-not-exist");
        assert_eq!(lookup(&missing, KEY).expect("missing"), None);
        assert_eq!(
            lookup(Path::new("/dev/null"), KEY).expect("/dev/null"),
            None
        );
        assert_eq!(
            lookup(&std::env::temp_dir(), KEY).expect("a directory"),
            None
        );
    }
}
