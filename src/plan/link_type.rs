//! `profile_links.type` (SPEC §1, §4): the four link types, shared by the
//! shapes reader (an entry's explicit `type`) and the URL rules.

use std::fmt;

use serde::Serialize;

/// `profile_links.type`. The declaration order is the order of object
/// entries (SPEC §2): website, imdb, showreel, other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Website,
    Imdb,
    Showreel,
    Other,
}

impl LinkType {
    /// An explicit `type` field: one of the four, ignoring case and
    /// surrounding whitespace.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "website" => Some(Self::Website),
            "imdb" => Some(Self::Imdb),
            "showreel" => Some(Self::Showreel),
            "other" => Some(Self::Other),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Website => "website",
            Self::Imdb => "imdb",
            Self::Showreel => "showreel",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
