//! What relink knows about platforms (SPEC §3 step 2, §4): the label table
//! (the known keys, with their labels and types), the host table (the
//! platforms of well-known hosts) and the profile URLs of handles. Data and
//! lookups only, shared by the shapes reader (which fields name a platform)
//! and the URL rules (types, labels, handles). Keys are looked up
//! normalized (`legacy::normalize_key`); hosts as the URL parser writes
//! them (lowercase, punycode).

use super::link_type::LinkType;

/// The label table (SPEC §4): a known key's label and type.
pub fn known_key(norm_key: &str) -> Option<(&'static str, LinkType)> {
    use LinkType::*;
    Some(match norm_key {
        "website" | "site" | "homepage" | "web" => ("Website", Website),
        "portfolio" => ("Portfolio", Website),
        "imdb" => ("IMDb Profile", Imdb),
        "showreel" | "reel" | "demoreel" => ("Showreel", Showreel),
        "linkedin" => ("LinkedIn", Other),
        "instagram" => ("Instagram", Other),
        "twitter" => ("Twitter", Other),
        "x" => ("X", Other),
        "facebook" => ("Facebook", Other),
        "youtube" => ("YouTube", Other),
        "tiktok" => ("TikTok", Other),
        "vimeo" => ("Vimeo", Other),
        "github" => ("GitHub", Other),
        "soundcloud" => ("SoundCloud", Other),
        "spotify" => ("Spotify", Other),
        "behance" => ("Behance", Other),
        "medium" => ("Medium", Other),
        "dribbble" => ("Dribbble", Other),
        "gitlab" => ("GitLab", Other),
        "twitch" => ("Twitch", Other),
        "pinterest" => ("Pinterest", Other),
        "threads" => ("Threads", Other),
        "bluesky" => ("Bluesky", Other),
        "mastodon" => ("Mastodon", Other),
        _ => return None,
    })
}

/// The host table (SPEC §4): a well-known domain and its platform, a key
/// of the label table.
pub const HOSTS: [(&str, &str); 22] = [
    ("linkedin.com", "linkedin"),
    ("github.com", "github"),
    ("twitter.com", "twitter"),
    ("x.com", "x"),
    ("instagram.com", "instagram"),
    ("facebook.com", "facebook"),
    ("fb.com", "facebook"),
    ("youtube.com", "youtube"),
    ("youtu.be", "youtube"),
    ("tiktok.com", "tiktok"),
    ("vimeo.com", "vimeo"),
    ("soundcloud.com", "soundcloud"),
    ("spotify.com", "spotify"),
    ("behance.net", "behance"),
    ("medium.com", "medium"),
    ("dribbble.com", "dribbble"),
    ("gitlab.com", "gitlab"),
    ("twitch.tv", "twitch"),
    ("pinterest.com", "pinterest"),
    ("threads.net", "threads"),
    ("bsky.app", "bluesky"),
    ("imdb.com", "imdb"),
];

/// The platform of a well-known host: the host table's entry for the host
/// or any domain it is a subdomain of (after dropping one leading `www.`).
pub fn host_platform(host: &str) -> Option<&'static str> {
    // The host, then each domain it is a subdomain of: a few exact
    // comparisons per table entry, not a suffix search.
    let mut domain = host.strip_prefix("www.").unwrap_or(host);
    loop {
        if let Some((_, platform)) = HOSTS.iter().find(|(known, _)| *known == domain) {
            return Some(platform);
        }
        domain = domain.split_once('.')?.1;
    }
}

/// `host` is `domain` or a subdomain of it (`m.imdb.com` is within
/// `imdb.com`; `notimdb.com` and `imdb.com.example` are not).
pub fn is_within(host: &str, domain: &str) -> bool {
    host.strip_suffix(domain)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// A normalized text that names a platform: a known key, or a platform of
/// the host table (SPEC §2 Entry objects: which `name`, `title`, `icon` or
/// `type` is taken as an entry's key).
pub fn names_platform(norm: &str) -> bool {
    known_key(norm).is_some() || HOSTS.iter().any(|(_, platform)| *platform == norm)
}

/// SPEC §3 step 2: the profile URL a handle under `norm_key` expands to
/// (the handle is appended), and whether that platform's handles may hold
/// a dot. `None` for keys without handles.
pub fn handle_url(norm_key: &str) -> Option<(&'static str, bool)> {
    Some(match norm_key {
        "instagram" => ("https://www.instagram.com/", true),
        "twitter" => ("https://twitter.com/", false),
        "x" => ("https://x.com/", false),
        "tiktok" => ("https://www.tiktok.com/@", true),
        "youtube" => ("https://www.youtube.com/@", true),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_of_the_host_table_is_a_known_key() {
        for (domain, platform) in HOSTS {
            assert!(known_key(platform).is_some(), "{domain} → {platform}");
        }
    }

    #[test]
    fn each_host_and_its_subdomains() {
        // SPEC §4's host table restated, not read from HOSTS: a change to
        // the table in the code must fail here until the SPEC says so too.
        let platforms = [
            ("linkedin.com", "linkedin"),
            ("github.com", "github"),
            ("twitter.com", "twitter"),
            ("x.com", "x"),
            ("instagram.com", "instagram"),
            ("facebook.com", "facebook"),
            ("fb.com", "facebook"),
            ("youtube.com", "youtube"),
            ("youtu.be", "youtube"),
            ("tiktok.com", "tiktok"),
            ("vimeo.com", "vimeo"),
            ("soundcloud.com", "soundcloud"),
            ("spotify.com", "spotify"),
            ("behance.net", "behance"),
            ("medium.com", "medium"),
            ("dribbble.com", "dribbble"),
            ("gitlab.com", "gitlab"),
            ("twitch.tv", "twitch"),
            ("pinterest.com", "pinterest"),
            ("threads.net", "threads"),
            ("bsky.app", "bluesky"),
            ("imdb.com", "imdb"),
        ];
        for (domain, platform) in platforms {
            for host in [
                domain.to_owned(),
                format!("www.{domain}"),
                format!("uk.{domain}"),
                format!("a.b.{domain}"),
            ] {
                assert_eq!(host_platform(&host), Some(platform), "{host}");
            }
            for host in [
                format!("not{domain}"),
                format!("{domain}.example"),
                format!("{domain}x"),
            ] {
                assert_eq!(host_platform(&host), None, "{host}");
            }
        }
        assert_eq!(host_platform("example.com"), None);
        // One leading www. only; www.www.x.com is still a subdomain of x.com.
        assert_eq!(host_platform("www.www.x.com"), Some("x"));
    }

    #[test]
    fn platform_names() {
        for name in ["website", "mastodon", "bluesky", "x", "imdb", "reel"] {
            assert!(names_platform(name), "{name}");
        }
        for name in ["bsky", "steam", "fabrands fagithub", "", "home page"] {
            assert!(!names_platform(name), "{name}");
        }
    }
}
