//! The two connection-string syntaxes libpq accepts, turned into one map of
//! keyword → raw value: URLs (`postgres://…`, `postgresql://…`) and
//! `key=value` strings. Nothing is interpreted here beyond the syntax; the
//! values are checked by [`super::ConnInfo::resolve`].
//!
//! Every error here names the keyword or the position, never the input: the
//! string may hold a password.

use std::collections::BTreeMap;

use super::ConnInfoError;

/// Keyword → raw value, as written (after unquoting or percent-decoding).
/// A later occurrence of a keyword replaces an earlier one, as in libpq.
pub type Params = BTreeMap<&'static str, String>;

/// The libpq parameters relink understands.
pub const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "passfile",
    "dbname",
    "connect_timeout",
    "application_name",
    "fallback_application_name",
    "options",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "service",
    "servicefile",
    "channel_binding",
    "target_session_attrs",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

/// libpq parameters relink does not implement. Naming them apart from
/// typos tells the operator the string is fine for psql but needs a change
/// for relink, rather than "unknown parameter".
const UNSUPPORTED: &[&str] = &[
    "sslcompression",
    "sslcertmode",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "requirepeer",
    "require_auth",
    "load_balance_hosts",
    "replication",
    "client_encoding",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
];

/// Parses either syntax: a URL when the text starts with `postgres://` or
/// `postgresql://` (libpq's rule), `key=value` pairs otherwise.
///
/// # Errors
/// On a syntax error, an unknown or unsupported keyword, or a bad
/// percent-encoding; the message names the keyword or position only.
pub fn parse(text: &str) -> Result<Params, ConnInfoError> {
    let trimmed = text.trim_start();
    for prefix in ["postgresql://", "postgres://"] {
        if let Some(rest) = strip_prefix_ignore_case(trimmed, prefix) {
            return parse_url(rest);
        }
    }
    parse_key_value(text)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Maps a keyword as written to the canonical `&'static str`, or explains
/// why it is not accepted.
pub(super) fn keyword(word: &str) -> Result<&'static str, ConnInfoError> {
    if let Some(known) = KEYWORDS.iter().find(|k| **k == word) {
        return Ok(known);
    }
    if let Some(unsupported) = UNSUPPORTED.iter().find(|k| **k == word) {
        return Err(ConnInfoError::UnsupportedParameter(unsupported));
    }
    // Only echo something that looks like a parameter name: a mangled
    // string could put part of a password where a keyword is expected.
    let shown = if !word.is_empty()
        && word.len() <= 40
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Some(word.to_owned())
    } else {
        None
    };
    Err(ConnInfoError::UnknownParameter(shown))
}

/// `key = value` pairs separated by white space; values may be single-quoted,
/// and `\` escapes the next character inside or outside quotes (libpq's
/// `conninfo_parse`).
fn parse_key_value(text: &str) -> Result<Params, ConnInfoError> {
    let mut params = Params::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut word = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            word.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // Not echoing the word: a URL missing its scheme would put the
            // user and password here.
            return Err(ConnInfoError::Syntax(format!(
                "missing \"=\" after the word at byte {start} of the connection string \
                 (a URL must start with postgres:// or postgresql://)"
            )));
        }
        let key = keyword(&word)?;
        // libpq skips white space after "=", so "host= port=1" sets host to
        // "port=1"; kept for compatibility.
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(ConnInfoError::Syntax(format!(
                            "unterminated quoted value for \"{key}\" in the connection string"
                        )))
                    }
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => {
                        if let Some((_, c)) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        params.insert(key, value);
    }
    Ok(params)
}

/// `[user[:password]@][host][:port][,…][/dbname][?key=value&…]` after the
/// scheme (libpq's `conninfo_uri_parse`). Several `host:port` pairs become
/// comma-separated `host` and `port` values, as libpq does, with an empty
/// port where a host has none.
fn parse_url(rest: &str) -> Result<Params, ConnInfoError> {
    let mut params = Params::new();
    // libpq looks for "@" only before the first "/" (so a password may hold
    // "?" or ":" but must percent-encode "/" and "@").
    let before_slash = &rest[..rest.find('/').unwrap_or(rest.len())];
    let after_credentials = match before_slash.find('@') {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, password)) => {
                    set_nonempty(&mut params, "user", decode(user, "user")?);
                    // An empty password is "no password", as in libpq.
                    set_nonempty(&mut params, "password", decode(password, "password")?);
                }
                None => set_nonempty(&mut params, "user", decode(&rest[..at], "user")?),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let end_of_hosts = after_credentials
        .find(['/', '?'])
        .unwrap_or(after_credentials.len());
    let (hosts_part, tail) = after_credentials.split_at(end_of_hosts);
    if hosts_part.contains('@') {
        return Err(ConnInfoError::Syntax(
            "the URL has more than one \"@\" before the host: percent-encode \"@\" \
             in the user name or password as %40"
                .into(),
        ));
    }
    parse_url_hosts(hosts_part, &mut params)?;

    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if let Some(dbname) = path.strip_prefix('/') {
        // A raw "@" here means the "@" before the host was not the one
        // libpq split at: the password holds a "/" (so the host, port and
        // this "database" are pieces of it). Refuse rather than show them.
        if dbname.contains('@') {
            return Err(ConnInfoError::Syntax(
                "the URL's database name holds \"@\": if the password contains \"/\", \
                 percent-encode it as %2F (and \"@\" in a database name as %40)"
                    .into(),
            ));
        }
        set_nonempty(&mut params, "dbname", decode(dbname, "dbname")?);
    }
    if let Some(query) = query {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((raw_key, raw_value)) = pair.split_once('=') else {
                return Err(ConnInfoError::Syntax(
                    "a URL query parameter is missing \"=\" (expected ?key=value&key=value)".into(),
                ));
            };
            let word = decode(raw_key, "a query parameter name")?;
            let value = decode(raw_value, "a query parameter value")?;
            // JDBC compatibility kept by libpq: ssl=true means sslmode=require.
            if word == "ssl" && value == "true" {
                params.insert("sslmode", "require".to_owned());
                continue;
            }
            let key = keyword(&word)?;
            params.insert(key, value);
        }
    }
    Ok(params)
}

fn set_nonempty(params: &mut Params, key: &'static str, value: String) {
    if !value.is_empty() {
        params.insert(key, value);
    }
}

/// The host list of a URL: `host[:port]` entries separated by commas, an
/// IPv6 address in brackets, a Unix socket directory percent-encoded.
fn parse_url_hosts(text: &str, params: &mut Params) -> Result<(), ConnInfoError> {
    if text.is_empty() {
        return Ok(());
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for entry in text.split(',') {
        let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
            let Some((address, after)) = bracketed.split_once(']') else {
                return Err(ConnInfoError::Syntax(
                    "an IPv6 host in the URL is missing its closing \"]\"".into(),
                ));
            };
            if address.is_empty() {
                return Err(ConnInfoError::Syntax(
                    "an IPv6 host in the URL is empty (\"[]\")".into(),
                ));
            }
            let port = match after {
                "" => "",
                _ => after.strip_prefix(':').ok_or_else(|| {
                    ConnInfoError::Syntax(
                        "unexpected text after \"]\" in the URL's host (expected \":port\")".into(),
                    )
                })?,
            };
            (address.to_owned(), port)
        } else {
            match entry.split_once(':') {
                Some((host, port)) => (decode(host, "host")?, port),
                None => (decode(entry, "host")?, ""),
            }
        };
        hosts.push(host);
        ports.push(decode(port, "port")?);
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        params.insert("host", hosts.join(","));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        params.insert("port", ports.join(","));
    }
    Ok(())
}

/// Percent-decoding as libpq's `conninfo_uri_decode`: a malformed escape or
/// an encoded NUL is an error (the `percent-encoding` crate would pass
/// them through, so they are refused first); `+` stays `+`.
fn decode(text: &str, what: &str) -> Result<String, ConnInfoError> {
    let bytes = text.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit) && hex != b"00")
    });
    if !well_formed {
        return Err(ConnInfoError::Syntax(format!(
            "invalid percent-encoding in the URL's {what} (expected %XX with two hex digits, \
             and no %00)"
        )));
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
            ConnInfoError::Syntax(format!(
                "the URL's {what} is not valid UTF-8 once percent-decoded"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Params {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn get<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
        params.get(key).map(String::as_str)
    }

    #[test]
    fn full_url() {
        let params = p("postgresql://al%40ice:p%3Ass%2Fw@db.example.com:6543/my%20db?sslmode=verify-full&application_name=x");
        assert_eq!(get(&params, "user"), Some("al@ice"));
        assert_eq!(get(&params, "password"), Some("p:ss/w"));
        assert_eq!(get(&params, "host"), Some("db.example.com"));
        assert_eq!(get(&params, "port"), Some("6543"));
        assert_eq!(get(&params, "dbname"), Some("my db"));
        assert_eq!(get(&params, "sslmode"), Some("verify-full"));
        assert_eq!(get(&params, "application_name"), Some("x"));
    }

    #[test]
    fn password_may_hold_colons_and_scheme_is_case_insensitive() {
        let params = p("POSTGRES://u:a:b?c@h/d");
        assert_eq!(get(&params, "password"), Some("a:b?c"));
        assert_eq!(get(&params, "user"), Some("u"));
    }

    #[test]
    fn url_multi_host_with_missing_ports() {
        let params =
            p("postgres://u@h1:5433,h2,[::1]:5435,[fe80::1]/db?target_session_attrs=read-write");
        assert_eq!(get(&params, "host"), Some("h1,h2,::1,fe80::1"));
        assert_eq!(get(&params, "port"), Some("5433,,5435,"));
        assert_eq!(get(&params, "target_session_attrs"), Some("read-write"));
    }

    #[test]
    fn url_unix_socket_host_and_query_host() {
        let params = p("postgresql://%2Fvar%2Frun%2Fpostgresql/db");
        assert_eq!(get(&params, "host"), Some("/var/run/postgresql"));
        let params = p("postgresql:///db?host=/tmp&port=5433");
        assert_eq!(get(&params, "host"), Some("/tmp"));
        assert_eq!(get(&params, "port"), Some("5433"));
        assert_eq!(get(&params, "dbname"), Some("db"));
    }

    #[test]
    fn url_without_anything() {
        assert!(p("postgres://").is_empty());
        assert!(p("postgresql:///").is_empty());
        assert!(p("postgres://?").is_empty());
    }

    #[test]
    fn url_query_overrides_authority_and_ssl_true_is_require() {
        let params = p("postgres://a@h/db?user=b&ssl=true&dbname=other");
        assert_eq!(get(&params, "user"), Some("b"));
        assert_eq!(get(&params, "dbname"), Some("other"));
        assert_eq!(get(&params, "sslmode"), Some("require"));
    }

    #[test]
    fn url_errors_never_echo_the_input() {
        for (url, needle) in [
            ("postgres://u:sec%ZZret@h/db", "percent-encoding"),
            ("postgres://u:sec%00ret@h/db", "percent-encoding"),
            ("postgres://u:sec@ret@h/db", "%40"),
            ("postgres://u:secret@h/db?secretkey=1", "unknown"),
            ("postgres://u:secret@[::1/db", "\"]\""),
            ("postgres://u:secret@h/db?sslmode", "missing \"=\""),
            ("postgres://u:12/sec@ret@h/db", "%2F"),
        ] {
            let err = parse(url).expect_err(url).to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(
                !err.contains("secret") || err.contains("\"secretkey\""),
                "{err}"
            );
            assert!(!err.contains("sec@ret") && !err.contains("secZZ"), "{err}");
        }
    }

    #[test]
    fn key_value_forms() {
        let params = p(
            r"host=h1,h2  port = 5432 user='al ice' password='it\'s \\ x' dbname=d\ b options='-c a=b'",
        );
        assert_eq!(get(&params, "host"), Some("h1,h2"));
        assert_eq!(get(&params, "port"), Some("5432"));
        assert_eq!(get(&params, "user"), Some("al ice"));
        assert_eq!(get(&params, "password"), Some(r"it's \ x"));
        assert_eq!(get(&params, "dbname"), Some("d b"));
        assert_eq!(get(&params, "options"), Some("-c a=b"));
    }

    #[test]
    fn key_value_empty_quoted_and_later_wins() {
        let params = p("user='' user=bob sslmode=disable");
        assert_eq!(get(&params, "user"), Some("bob"));
        assert!(p("").is_empty());
        assert!(p("   ").is_empty());
        assert_eq!(get(&p("dbname=''"), "dbname"), Some(""));
    }

    #[test]
    fn key_value_errors_name_the_keyword_only() {
        let err = parse("host=h password=hunter2 colour=blue").expect_err("must fail");
        assert_eq!(err.to_string().matches("colour").count(), 1, "{err}");
        assert!(!err.to_string().contains("hunter2"));
        let err = parse("host=h password='hunter2")
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("unterminated") && !err.contains("hunter2"),
            "{err}"
        );
        let err = parse("postgres:/u:hunter2@h/db")
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("missing \"=\"") && !err.contains("hunter2"),
            "{err}"
        );
        let err = parse("hunter2!x=1").expect_err("must fail").to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn unsupported_parameters_are_named_as_such() {
        let err = parse("host=h sslcertmode=require")
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("sslcertmode") && err.contains("not supported"),
            "{err}"
        );
        let err = parse("postgres://h/db?gssencmode=disable")
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("gssencmode") && err.contains("not supported"),
            "{err}"
        );
        // Implemented since: service files and the other TLS parameters.
        for text in ["service=x", "postgres://h/db?service=x&sslcrl=/x&sslsni=0"] {
            assert!(parse(text).is_ok(), "{text}");
        }
    }
}
