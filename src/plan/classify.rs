//! URL rules and classification (SPEC §3–§4): one candidate value in, either a
//! valid link (stored URL, comparison key, type, label) or a reject reason.
//! Pure: no I/O, no clock. Rejects are values, never errors or panics.

use std::borrow::Cow;

use serde::Serialize;
use url::{Host, Url};

use super::legacy::{is_blank, normalize_key, Candidate, Json};
pub use super::link_type::LinkType;
use super::platforms;
use crate::text_enum::text_enum;

/// Longest stored URL accepted, in bytes (SPEC §3 `too_long`).
pub const MAX_URL_BYTES: usize = 2048;
/// Longest label, in Unicode scalar values (SPEC §4).
pub const MAX_LABEL_CHARS: usize = 40;

/// Why a legacy value did not become a link. When several apply, the first
/// in declaration order wins (SPEC §3 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    NotAString,
    Empty,
    Unparseable,
    Scheme,
    NoHost,
    IpHost,
    BadHost,
    Credentials,
    TooLong,
}

text_enum!(RejectReason "reject reason" {
    NotAString = "not_a_string",
    Empty = "empty",
    Unparseable = "unparseable",
    Scheme = "scheme",
    NoHost = "no_host",
    IpHost = "ip_host",
    BadHost = "bad_host",
    Credentials = "credentials",
    TooLong = "too_long",
});

/// A candidate that passed the URL rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub url: Url,
    /// SPEC §3 step 6; used for deduplication and ids, never stored.
    pub key: String,
    pub link_type: LinkType,
    pub label: String,
}

/// The result of classifying one candidate, with the repairs applied on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub outcome: Result<Link, RejectReason>,
    /// A bare handle became a profile URL (SPEC §3 step 2).
    pub expanded: bool,
    /// `https://` was prefixed (SPEC §3 step 3).
    pub repaired: bool,
}

/// Applies SPEC §3 and §4 to one candidate.
pub fn classify(candidate: &Candidate<'_>) -> Classified {
    let mut classified = Classified {
        outcome: Err(RejectReason::NotAString),
        expanded: false,
        repaired: false,
    };
    let Some(raw) = candidate.value.and_then(Json::as_str) else {
        return classified;
    };
    if is_blank(&raw) {
        classified.outcome = Err(RejectReason::Empty);
        return classified;
    }
    let norm_key = candidate.key.as_deref().map(normalize_key);
    let trimmed = raw.trim();
    let text = if let Some(url) = norm_key.as_deref().and_then(|k| expand_handle(k, trimmed)) {
        classified.expanded = true;
        Cow::Owned(url)
    } else if let Some(url) = repair_scheme(trimmed) {
        classified.repaired = true;
        Cow::Owned(url)
    } else {
        Cow::Borrowed(trimmed)
    };
    classified.outcome = parse(&text).map(|url| {
        let key = comparison_key(&url);
        let link_type = link_type(candidate, norm_key.as_deref(), Some(&url));
        let label = label(candidate, norm_key.as_deref(), link_type, &url);
        Link {
            url,
            key,
            link_type,
            label,
        }
    });
    classified
}

/// The type used to order a candidate among an object's entries: its link
/// type when it is valid, else what its explicit type or key alone implies.
pub fn order_type(candidate: &Candidate<'_>, classified: &Classified) -> LinkType {
    match &classified.outcome {
        Ok(link) => link.link_type,
        Err(_) => {
            let norm_key = candidate.key.as_deref().map(normalize_key);
            link_type(candidate, norm_key.as_deref(), None)
        }
    }
}

/// The comparison key of a URL already stored in `profile_links` (a user's
/// row, SPEC §5): trimmed and scheme-repaired like a legacy value, then
/// parsed and keyed whatever its scheme or host (the row exists: the reject
/// rules have nothing to say about it). A row that still does not parse
/// compares as its trimmed text. So `www.example.com/x` and a legacy
/// `https://example.com/x` are one link. Verify's duplicate check uses it too.
pub fn stored_url_key(url: &str) -> String {
    let text = url.trim();
    let repaired = repair_scheme(text);
    match Url::parse(repaired.as_deref().unwrap_or(text)) {
        Ok(parsed) => comparison_key(&parsed),
        Err(_) => text.to_owned(),
    }
}

/// The same URL with `https` as its scheme (SPEC §3 step 5).
pub fn with_https(url: &Url) -> Url {
    let mut upgraded = url.clone();
    // Both schemes are "special", so the url crate always allows this switch.
    let _ = upgraded.set_scheme("https");
    upgraded
}

/// SPEC §3 step 2: a bare handle under a social key becomes its profile URL.
fn expand_handle(norm_key: &str, text: &str) -> Option<String> {
    let (prefix, allow_dot) = platforms::handle_url(norm_key)?;
    let handle = text.strip_prefix('@').unwrap_or(text);
    let valid = (1..=30).contains(&handle.len())
        && handle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (b == b'.' && allow_dot));
    valid.then(|| format!("{prefix}{handle}"))
}

/// SPEC §3 step 3: `https://` for a scheme-less value that starts with a
/// domain name, or with `//`.
fn repair_scheme(text: &str) -> Option<String> {
    if let Some(rest) = text.strip_prefix("//") {
        return Some(format!("https://{rest}"));
    }
    if has_scheme(text) {
        return None;
    }
    let head = text.split('/').next().unwrap_or(text);
    (head.contains('.') && !head.chars().any(char::is_whitespace))
        .then(|| format!("https://{text}"))
}

/// `scheme:` at the start, where a dotted "scheme" is really a host with a
/// port (`www.example.com:8080`), so it does not count.
fn has_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(':') else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-')
}

/// SPEC §3 step 4: WHATWG parse and the reject reasons, in their order.
fn parse(text: &str) -> Result<Url, RejectReason> {
    let url = Url::parse(text).map_err(|err| {
        let http = text.split_once(':').is_some_and(|(s, _)| {
            s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")
        });
        if err == url::ParseError::EmptyHost && http {
            RejectReason::NoHost
        } else {
            RejectReason::Unparseable
        }
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RejectReason::Scheme);
    }
    match url.host() {
        None => return Err(RejectReason::NoHost),
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => return Err(RejectReason::IpHost),
        Some(Host::Domain(domain)) if !is_good_domain(domain) => return Err(RejectReason::BadHost),
        Some(Host::Domain(_)) => {}
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RejectReason::Credentials);
    }
    if url.as_str().len() > MAX_URL_BYTES {
        return Err(RejectReason::TooLong);
    }
    Ok(url)
}

/// A dotted domain whose last label is letters or punycode (`xn--…`).
fn is_good_domain(domain: &str) -> bool {
    let Some((_, last)) = domain.rsplit_once('.') else {
        return false;
    };
    let letters = !last.is_empty() && last.bytes().all(|b| b.is_ascii_lowercase());
    let punycode = last.strip_prefix("xn--").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    letters || punycode
}

/// SPEC §3 step 6: host without one leading `www.`, non-default port, path
/// without one trailing `/`, then the query without empty segments and
/// tracking parameters. Scheme and fragment are ignored.
pub fn comparison_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let mut key = String::with_capacity(url.as_str().len());
    key.push_str(host.strip_prefix("www.").unwrap_or(host));
    if let Some(port) = url.port() {
        key.push(':');
        key.push_str(&port.to_string());
    }
    let path = url.path();
    key.push_str(path.strip_suffix('/').unwrap_or(path));
    let mut sep = '?';
    for param in url.query().unwrap_or_default().split('&') {
        if param.is_empty() || is_tracking_param(param) {
            continue;
        }
        key.push(sep);
        key.push_str(param);
        sep = '&';
    }
    key
}

/// `utm_*`, `fbclid`, `gclid`, names compared ignoring ASCII case.
fn is_tracking_param(param: &str) -> bool {
    let name = param.split('=').next().unwrap_or(param);
    name.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("utm_"))
        || name.eq_ignore_ascii_case("fbclid")
        || name.eq_ignore_ascii_case("gclid")
}

/// SPEC §4 type: explicit type, else the known key's, else by host.
fn link_type(candidate: &Candidate<'_>, norm_key: Option<&str>, url: Option<&Url>) -> LinkType {
    if let Some(explicit) = candidate.link_type {
        return explicit;
    }
    if let Some((_, known)) = norm_key.and_then(platforms::known_key) {
        return known;
    }
    let host = url.and_then(Url::host_str).unwrap_or_default();
    if platforms::is_within(host, "imdb.com") {
        LinkType::Imdb
    } else {
        LinkType::Other
    }
}

/// SPEC §4 label: explicit, else the label table, else the key as written
/// (first letter uppercased), else from the type, else the platform of a
/// well-known host, else the host.
fn label(
    candidate: &Candidate<'_>,
    norm_key: Option<&str>,
    link_type: LinkType,
    url: &Url,
) -> String {
    if let Some(explicit) = candidate
        .label
        .as_deref()
        .map(clean_label)
        .filter(|l| !l.is_empty())
    {
        return explicit;
    }
    if let Some((known, _)) = norm_key.and_then(platforms::known_key) {
        return known.to_owned();
    }
    let written = candidate
        .key
        .as_deref()
        .map(clean_label)
        .unwrap_or_default();
    let mut chars = written.chars();
    if let Some(first) = chars.next() {
        return clean_label(&format!("{}{}", first.to_uppercase(), chars.as_str()));
    }
    let from_type = match link_type {
        LinkType::Website => "Website",
        LinkType::Imdb => "IMDb Profile",
        LinkType::Showreel => "Showreel",
        LinkType::Other => {
            // A reviewer should read `LinkedIn`, not `linkedin.com`; a
            // personal site's host is its best name.
            let host = url.host_str().unwrap_or_default();
            let platform = platforms::host_platform(host).and_then(platforms::known_key);
            return match platform {
                Some((known, _)) => known.to_owned(),
                None => clean_label(host.strip_prefix("www.").unwrap_or(host)),
            };
        }
    };
    from_type.to_owned()
}

/// SPEC §4: removes control characters but whitespace ones (PostgreSQL
/// text cannot even hold NUL), collapses whitespace runs to one space,
/// trims, and cuts to [`MAX_LABEL_CHARS`] characters on a character
/// boundary (trimming again). Empty exactly when `text` is blank.
fn clean_label(text: &str) -> String {
    let mut label = String::with_capacity(text.len().min(4 * MAX_LABEL_CHARS));
    let (mut chars, mut space) = (0, false);
    for c in text.chars() {
        if c.is_whitespace() {
            space = !label.is_empty();
            continue;
        }
        if c.is_control() {
            continue;
        }
        if space {
            label.push(' ');
            chars += 1;
            space = false;
        }
        if chars >= MAX_LABEL_CHARS {
            break;
        }
        label.push(c);
        chars += 1;
    }
    label.truncate(label.trim_end().len());
    label
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn run(key: Option<&str>, value: &Value) -> Classified {
        classify(&Candidate {
            key: key.map(Cow::Borrowed),
            value: Some(value.into()),
            label: None,
            link_type: None,
        })
    }

    fn ok(key: Option<&str>, value: &str) -> Link {
        match run(key, &json!(value)).outcome {
            Ok(link) => link,
            Err(reason) => panic!("{value:?} rejected: {reason}"),
        }
    }

    fn reject(key: Option<&str>, value: &Value) -> RejectReason {
        match run(key, value).outcome {
            Ok(link) => panic!("{value} accepted as {}", link.url),
            Err(reason) => reason,
        }
    }

    #[test]
    fn each_reject_reason() {
        use RejectReason::*;
        let cases: &[(Value, RejectReason)] = &[
            (json!(42), NotAString),
            (json!(null), NotAString),
            (json!(["https://a.com"]), NotAString),
            (json!(""), Empty),
            (json!(" \t\u{3000}"), Empty),
            (json!("\u{0}\u{7f} "), Empty),
            (json!("not a url"), Unparseable),
            (json!("http://exa mple.com"), Unparseable),
            (json!("javascript:alert(1)"), Scheme),
            (json!("mailto:me@example.com"), Scheme),
            (json!("ftp://example.com/x"), Scheme),
            (json!("localhost:3000"), Scheme),
            (json!("http://"), NoHost),
            (json!("https://?q=1"), NoHost),
            (json!("http://192.168.0.1/"), IpHost),
            (json!("https://[::1]/"), IpHost),
            (json!("http://localhost/"), BadHost),
            (json!("https://example.c0m/"), BadHost),
            (json!("https://example.com./"), BadHost),
            (json!("https://user:pw@example.com/"), Credentials),
            (json!("https://user@example.com/"), Credentials),
            (
                json!(format!("https://example.com/{}", "a".repeat(2040))),
                TooLong,
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(reject(None, value), *reason, "{value}");
        }
    }

    #[test]
    fn first_reason_wins() {
        // An IP host with credentials: ip_host comes first.
        assert_eq!(
            reject(None, &json!("http://u:p@10.0.0.1/")),
            RejectReason::IpHost
        );
        // A bad host that is also too long: bad_host comes first.
        let long = format!("http://localhost/{}", "a".repeat(3000));
        assert_eq!(reject(None, &json!(long)), RejectReason::BadHost);
    }

    #[test]
    fn exactly_2048_bytes_is_kept() {
        let base = "https://example.com/";
        let url = format!("{base}{}", "a".repeat(MAX_URL_BYTES - base.len()));
        assert_eq!(ok(None, &url).url.as_str().len(), MAX_URL_BYTES);
    }

    #[test]
    fn stored_url_is_the_parser_serialization() {
        let cases = [
            ("HTTPS://WWW.Example.COM", "https://www.example.com/"),
            ("https://example.com:443/a", "https://example.com/a"),
            ("http://example.com:80/a", "http://example.com/a"),
            ("https://example.com:8080/a", "https://example.com:8080/a"),
            ("https://example.com/a/../b/./c", "https://example.com/b/c"),
            ("https://bücher.example/", "https://xn--bcher-kva.example/"),
            ("  https://example.com/x \n", "https://example.com/x"),
        ];
        for (input, stored) in cases {
            assert_eq!(ok(None, input).url.as_str(), stored, "{input}");
        }
    }

    #[test]
    fn scheme_repair() {
        for (input, stored) in [
            ("example.com", "https://example.com/"),
            ("www.example.com/path", "https://www.example.com/path"),
            ("//example.com/x", "https://example.com/x"),
            ("www.example.com:8080/x", "https://www.example.com:8080/x"),
            ("example.com:8080/x", "https://example.com:8080/x"),
        ] {
            let c = run(None, &json!(input));
            assert!(c.repaired, "{input}");
            assert_eq!(c.outcome.map(|l| l.url.to_string()), Ok(stored.to_owned()));
        }
        let c = run(None, &json!("https://example.com"));
        assert!(!c.repaired);
        // Not a domain before the first slash: no repair, unparseable.
        let c = run(None, &json!("nm0000001/x.y"));
        assert!(!c.repaired);
        assert_eq!(c.outcome, Err(RejectReason::Unparseable));
    }

    #[test]
    fn handle_expansion_per_platform() {
        for (key, value, url) in [
            (
                "instagram",
                "@jane.doe",
                "https://www.instagram.com/jane.doe",
            ),
            (
                "Instagram",
                "jane_doe",
                "https://www.instagram.com/jane_doe",
            ),
            ("twitter", "@jack", "https://twitter.com/jack"),
            ("x", "jack", "https://x.com/jack"),
            ("tiktok", "@dancer", "https://www.tiktok.com/@dancer"),
            ("YouTube", "creator", "https://www.youtube.com/@creator"),
        ] {
            let c = run(Some(key), &json!(value));
            assert!(c.expanded, "{key} {value}");
            assert_eq!(c.outcome.map(|l| l.url.to_string()), Ok(url.to_owned()));
        }
        // A dot is not allowed in twitter/x handles: not expanded.
        assert!(!run(Some("twitter"), &json!("jack.b")).expanded);
        // 31 characters is too long for a handle.
        assert!(!run(Some("instagram"), &json!("a".repeat(31))).expanded);
        assert!(run(Some("instagram"), &json!("a".repeat(30))).expanded);
        // Only for the five platforms.
        assert!(!run(Some("facebook"), &json!("jane")).expanded);
        assert!(!run(None, &json!("jane")).expanded);
    }

    #[test]
    fn comparison_keys() {
        for (input, key) in [
            (
                "HTTP://WWW.Example.com:80/a/b/?utm_source=x&id=7#top",
                "example.com/a/b?id=7",
            ),
            ("https://example.com/", "example.com"),
            ("https://www.example.com", "example.com"),
            ("https://www.www.example.com/", "www.example.com"),
            ("https://example.com:8080/", "example.com:8080"),
            ("https://example.com/A/B//", "example.com/A/B/"),
            (
                "https://example.com/?a=&&b=1&fbclid=z&GCLID=y&UTM_x=1",
                "example.com?a=&b=1",
            ),
            ("https://example.com/?utm_source=x", "example.com"),
            ("https://example.com/p?Q=1#frag", "example.com/p?Q=1"),
        ] {
            assert_eq!(ok(None, input).key, key, "{input}");
        }
    }

    #[test]
    fn types_and_labels_of_known_keys() {
        for (key, label, ty) in [
            ("website", "Website", LinkType::Website),
            ("site", "Website", LinkType::Website),
            ("homepage", "Website", LinkType::Website),
            ("web", "Website", LinkType::Website),
            ("portfolio", "Portfolio", LinkType::Website),
            ("IMDB", "IMDb Profile", LinkType::Imdb),
            ("showreel", "Showreel", LinkType::Showreel),
            ("reel", "Showreel", LinkType::Showreel),
            ("Demo-Reel", "Showreel", LinkType::Showreel),
            ("linkedin", "LinkedIn", LinkType::Other),
            ("instagram", "Instagram", LinkType::Other),
            ("twitter", "Twitter", LinkType::Other),
            ("x", "X", LinkType::Other),
            ("facebook", "Facebook", LinkType::Other),
            ("youtube", "YouTube", LinkType::Other),
            ("tiktok", "TikTok", LinkType::Other),
            ("vimeo", "Vimeo", LinkType::Other),
            ("github", "GitHub", LinkType::Other),
            ("soundcloud", "SoundCloud", LinkType::Other),
            ("spotify", "Spotify", LinkType::Other),
            ("behance", "Behance", LinkType::Other),
            ("medium", "Medium", LinkType::Other),
            ("dribbble", "Dribbble", LinkType::Other),
            ("GitLab", "GitLab", LinkType::Other),
            ("twitch", "Twitch", LinkType::Other),
            ("pinterest", "Pinterest", LinkType::Other),
            ("threads", "Threads", LinkType::Other),
            ("Blue_Sky", "Bluesky", LinkType::Other),
            ("MASTODON", "Mastodon", LinkType::Other),
        ] {
            let link = ok(Some(key), "https://example.com/a.b");
            assert_eq!((link.label.as_str(), link.link_type), (label, ty), "{key}");
        }
    }

    #[test]
    fn unknown_and_missing_keys() {
        let link = ok(Some("my  blog"), "https://example.com/");
        assert_eq!(
            (link.label.as_str(), link.link_type),
            ("My blog", LinkType::Other)
        );
        let link = ok(Some("ünknown"), "https://www.imdb.com/name/nm1/");
        assert_eq!(
            (link.label.as_str(), link.link_type),
            ("Ünknown", LinkType::Imdb)
        );
        let link = ok(None, "https://m.imdb.com/name/nm1/");
        assert_eq!(
            (link.label.as_str(), link.link_type),
            ("IMDb Profile", LinkType::Imdb)
        );
        let link = ok(None, "https://notimdb.com/");
        assert_eq!(
            (link.label.as_str(), link.link_type),
            ("notimdb.com", LinkType::Other)
        );
        let link = ok(None, "https://www.example.org/1");
        assert_eq!(link.label, "example.org");
        // An unknown key is the label even for a well-known host.
        let link = ok(Some("gh"), "https://github.com/octocat");
        assert_eq!(link.label, "Gh");
    }

    #[test]
    fn keyless_links_to_well_known_hosts_are_labelled_by_platform() {
        for (url, label) in [
            ("https://www.linkedin.com/in/jane", "LinkedIn"),
            ("https://uk.linkedin.com/in/jane", "LinkedIn"),
            ("https://gist.github.com/jane", "GitHub"),
            ("https://twitter.com/jack", "Twitter"),
            ("https://mobile.twitter.com/jack", "Twitter"),
            ("https://x.com/jack", "X"),
            ("https://www.instagram.com/jane/", "Instagram"),
            ("https://m.facebook.com/jane", "Facebook"),
            ("https://fb.com/jane", "Facebook"),
            ("https://music.youtube.com/@jane", "YouTube"),
            ("https://youtu.be/abc", "YouTube"),
            ("https://www.tiktok.com/@jane", "TikTok"),
            ("https://player.vimeo.com/video/1", "Vimeo"),
            ("https://soundcloud.com/jane", "SoundCloud"),
            ("https://open.spotify.com/artist/1", "Spotify"),
            ("https://www.behance.net/jane", "Behance"),
            ("https://jane.medium.com/", "Medium"),
            ("https://dribbble.com/jane", "Dribbble"),
            ("https://gitlab.com/jane", "GitLab"),
            ("https://www.twitch.tv/jane", "Twitch"),
            ("https://uk.pinterest.com/jane", "Pinterest"),
            ("https://www.threads.net/@jane", "Threads"),
            ("https://bsky.app/profile/jane", "Bluesky"),
            ("https://jane.github.io/", "jane.github.io"),
            ("https://notgithub.com/", "notgithub.com"),
            ("https://github.com.example/", "github.com.example"),
        ] {
            let link = ok(None, url);
            assert_eq!(
                (link.label.as_str(), link.link_type),
                (label, LinkType::Other),
                "{url}"
            );
        }
        // imdb.com is in the host table too, but its type names it first.
        assert_eq!(
            ok(None, "https://www.imdb.com/name/nm1/").label,
            "IMDb Profile"
        );
    }

    #[test]
    fn label_precedence() {
        let value = json!("https://github.com/octocat");
        let label = |key: Option<&str>, label: Option<&str>, link_type| {
            let c = Candidate {
                key: key.map(Cow::Borrowed),
                value: Some((&value).into()),
                label: label.map(Cow::Borrowed),
                link_type,
            };
            classify(&c).outcome.expect("valid").label
        };
        // Explicit, then label table, then the key, then type, then host.
        assert_eq!(label(Some("twitter"), Some("Mine"), None), "Mine");
        assert_eq!(label(Some("twitter"), None, None), "Twitter");
        assert_eq!(label(Some("code"), None, None), "Code");
        assert_eq!(label(None, None, Some(LinkType::Showreel)), "Showreel");
        assert_eq!(label(None, None, Some(LinkType::Website)), "Website");
        assert_eq!(label(None, None, Some(LinkType::Other)), "GitHub");
        assert_eq!(label(None, None, None), "GitHub");
        assert_eq!(label(None, Some("\u{0} \t"), None), "GitHub");
    }

    #[test]
    fn labels_drop_control_characters_but_whitespace() {
        for (text, label) in [
            ("IMDb\u{0}Label", "IMDbLabel"),
            ("a\u{7}\u{1b}[1mb", "a[1mb"),
            ("a\tb\nc\u{b}d\u{c}e\rf\u{85}g", "a b c d e f g"),
            ("  a \u{0} b  ", "a b"),
            ("\u{a0}a\u{3000}\u{3000}b\u{2028}", "a b"),
        ] {
            assert_eq!(clean_label(text), label, "{text:?}");
        }
        assert_eq!(
            clean_label(&format!("{}\u{0}bc", "a".repeat(39))),
            format!("{}b", "a".repeat(39))
        );
        assert_eq!(
            clean_label(&format!("{} bc", "a".repeat(39))),
            "a".repeat(39)
        );
        assert_eq!(
            clean_label(&format!("{} bc", "a".repeat(40))),
            "a".repeat(40)
        );
    }

    #[test]
    fn explicit_type_and_label_win() {
        let value = json!("https://example.com/");
        let c = Candidate {
            key: Some("imdb".into()),
            value: Some((&value).into()),
            label: Some("  My   reel  ".into()),
            link_type: Some(LinkType::Showreel),
        };
        let link = classify(&c).outcome.expect("valid");
        assert_eq!(
            (link.label.as_str(), link.link_type),
            ("My reel", LinkType::Showreel)
        );
        // An empty explicit label falls back; explicit type sets the label.
        let c = Candidate {
            key: None,
            label: Some("   ".into()),
            ..c
        };
        let link = classify(&c).outcome.expect("valid");
        assert_eq!(link.label, "Showreel");
    }

    #[test]
    fn labels_are_cut_at_40_characters() {
        let value = json!("https://example.com/");
        for text in [
            "x".repeat(60),
            "🎬".repeat(45),
            "שלום עולם ".repeat(6),
            format!("{} tail", "a".repeat(39)),
        ] {
            let c = Candidate {
                key: None,
                value: Some((&value).into()),
                label: Some(text.as_str().into()),
                link_type: None,
            };
            let label = classify(&c).outcome.expect("valid").label;
            assert!(label.chars().count() <= MAX_LABEL_CHARS, "{label}");
            assert!(text.starts_with(&label) || text.contains(label.as_str()));
            assert_eq!(label, label.trim());
        }
    }

    #[test]
    fn stored_url_keys_are_legacy_keys_with_any_scheme() {
        for (stored, key) in [
            ("https://WWW.example.com/a/", "example.com/a"),
            ("www.example.com/x", "example.com/x"),
            (" example.com/x/ ", "example.com/x"),
            ("//example.com/x", "example.com/x"),
            ("example.com:8080/x", "example.com:8080/x"),
            ("http://example.com/x?utm_source=a", "example.com/x"),
            // Reject rules do not apply to a row that exists.
            ("ftp://example.com/x", "example.com/x"),
            ("http://localhost:3000/x", "localhost:3000/x"),
            ("https://user@example.com/x", "example.com/x"),
            // Still not parseable: the trimmed text.
            (" not a url ", "not a url"),
            ("exa mple.com/x", "exa mple.com/x"),
            ("example.com:99999/x", "example.com:99999/x"),
        ] {
            assert_eq!(stored_url_key(stored), key, "{stored}");
        }
        // A user's scheme-less row and a legacy https link are one link.
        assert_eq!(
            stored_url_key("www.example.com/x"),
            ok(None, "https://example.com/x").key
        );
    }

    #[test]
    fn https_upgrade_keeps_everything_else() {
        let url = Url::parse("http://example.com:8080/a?b#c").expect("valid");
        assert_eq!(with_https(&url).as_str(), "https://example.com:8080/a?b#c");
    }
}
