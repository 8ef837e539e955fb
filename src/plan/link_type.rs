//! `profile_links.type` (SPEC §1, §4): the four link types, shared by the
//! shapes reader (an entry's explicit `type`) and the URL rules.

use serde::Serialize;

use crate::text_enum::{text_enum, TextEnum as _};

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
        Self::from_text(&text.trim().to_ascii_lowercase())
    }
}

text_enum!(LinkType "link type" {
    Website = "website",
    Imdb = "imdb",
    Showreel = "showreel",
    Other = "other",
});
