//! Legacy input shapes (SPEC §2): one `"socialLinks"` value in, the candidate
//! values it holds out, in source order, with their keys and any explicit
//! label or type. No URL rules here; those live in `classify`.
//!
//! # Hostile values
//!
//! The reader hands over each value as PostgreSQL's text of it, which may
//! nest about 14,500 levels deep (as far as `max_stack_depth` lets
//! PostgreSQL parse it), hold numbers of any size (`numeric`) and strings of
//! many megabytes. Parsing that text into a `serde_json::Value` fails beyond
//! 128 levels or f64's range, and the valid links beside the hostile part
//! are lost with it. Lifting serde_json's limits (`unbounded_depth` on a
//! growing stack, `arbitrary_precision`) would trade that failure for
//! recursion over the whole depth — when parsing, when writing a reject's
//! raw text and when dropping the value — on tokio's 2 MiB worker stacks,
//! and would change how every number in the crate is represented.
//!
//! The shapes never look deeper than three levels (the value, its entries,
//! an entry's fields), so the text is read one level at a time instead:
//! [`parse`] checks it once (serde_json steps over a value with a loop, not
//! recursion, and without converting numbers) and keeps it as text; each
//! level the shapes look at is then split into the texts of its children
//! ([`Json::Text`]). A deeper part is never parsed: it stays a slice of the
//! text, whatever its depth or size, becomes at most one reject, and its raw
//! text is that slice with the blanks between tokens removed. Memory stays
//! one copy of the text plus the strings taken out of it (borrowed unless
//! they hold escapes). Tests and tools hand in parsed `Value`s
//! ([`Json::Value`]), read through the same functions.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::link_type::LinkType;
use super::platforms;

/// One profile's legacy value as the reader holds it: its JSON text,
/// checked to be one JSON value and parsed no further.
#[derive(Debug, Clone)]
pub struct Social(Box<RawValue>);

impl Social {
    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }
}

/// Reads a legacy value's text (`"socialLinks"::text`). A text that is not
/// JSON (PostgreSQL never writes one) stands for a string holding that
/// text, so it is rejected by the planner instead of failing the reader.
pub fn parse(text: &str) -> Social {
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(json) => Social(json),
        Err(_) => Social(serde_json::value::to_raw_value(text).expect("a string is JSON")),
    }
}

/// A JSON value inside a legacy value, read one level at a time: parsed
/// (tests and tools) or as text (the reader, see the module docs).
#[derive(Debug, Clone, Copy)]
pub enum Json<'a> {
    Value(&'a Value),
    Text(&'a RawValue),
}

impl<'a> From<&'a Value> for Json<'a> {
    fn from(value: &'a Value) -> Self {
        Self::Value(value)
    }
}

impl<'a> From<&'a Social> for Json<'a> {
    fn from(social: &'a Social) -> Self {
        Self::Text(&social.0)
    }
}

impl<'a> Json<'a> {
    /// The first byte of a text: which kind of value it is. Texts are
    /// checked JSON without surrounding blanks, so it is the value's own.
    fn first_byte(text: &RawValue) -> u8 {
        text.get().bytes().next().unwrap_or(b'n')
    }

    fn is_null(self) -> bool {
        match self {
            Self::Value(value) => value.is_null(),
            Self::Text(text) => Self::first_byte(text) == b'n',
        }
    }

    /// The text of a JSON string; `None` for any other value.
    pub fn as_str(self) -> Option<Cow<'a, str>> {
        match self {
            Self::Value(value) => value.as_str().map(Cow::Borrowed),
            Self::Text(text) if Self::first_byte(text) == b'"' => {
                // Checked text decodes, but for a lone surrogate escape
                // (which PostgreSQL refuses to store): then not a string.
                serde_json::from_str::<Str<'a>>(text.get())
                    .ok()
                    .map(|s| s.0)
            }
            Self::Text(_) => None,
        }
    }

    /// The items of a JSON array; `None` for any other value.
    fn items(self) -> Option<Items<'a>> {
        match self {
            Self::Value(Value::Array(items)) => Some(Items::Value(items.iter())),
            Self::Text(text) if Self::first_byte(text) == b'[' => {
                serde_json::from_str::<Vec<&'a RawValue>>(text.get())
                    .ok()
                    .map(|items| Items::Text(items.into_iter()))
            }
            _ => None,
        }
    }

    /// The entries of a JSON object, in the order held (key order for a
    /// `Value`, PostgreSQL's for a text); `None` for any other value.
    fn entries(self) -> Option<Entries<'a>> {
        match self {
            Self::Value(Value::Object(map)) => Some(Entries::Value(map.iter())),
            Self::Text(text) if Self::first_byte(text) == b'{' => {
                serde_json::from_str::<TextEntries<'a>>(text.get())
                    .ok()
                    .map(|entries| Entries::Text(entries.0.into_iter()))
            }
            _ => None,
        }
    }

    /// The value as a reject shows it: a string's text, else its compact
    /// JSON (serde_json's for a `Value`, the text without the blanks
    /// between tokens for a text).
    pub fn raw(self) -> String {
        if let Some(text) = self.as_str() {
            return text.into_owned();
        }
        match self {
            Self::Value(value) => value.to_string(),
            Self::Text(text) => compact(text.get()),
        }
    }
}

/// The JSON text without whitespace between tokens (PostgreSQL writes
/// `{"a": [1, 2]}`, a reject shows `{"a":[1,2]}`). A loop over the
/// characters: no recursion, whatever the depth.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The items of an array, as [`Json`] values.
enum Items<'a> {
    Value(std::slice::Iter<'a, Value>),
    Text(std::vec::IntoIter<&'a RawValue>),
}

impl<'a> Iterator for Items<'a> {
    type Item = Json<'a>;

    fn next(&mut self) -> Option<Json<'a>> {
        match self {
            Self::Value(items) => items.next().map(Json::Value),
            Self::Text(items) => items.next().map(Json::Text),
        }
    }
}

/// The entries of an object: each key and its value as a [`Json`].
enum Entries<'a> {
    Value(serde_json::map::Iter<'a>),
    Text(std::vec::IntoIter<(Cow<'a, str>, &'a RawValue)>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = (Cow<'a, str>, Json<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Value(entries) => entries
                .next()
                .map(|(key, value)| (Cow::Borrowed(key.as_str()), Json::Value(value))),
            Self::Text(entries) => entries.next().map(|(key, value)| (key, Json::Text(value))),
        }
    }
}

/// A JSON string, borrowed from the text unless it holds escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// One level of an object's text: its keys, and the text of each value
/// (which serde_json steps over without parsing it).
struct TextEntries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TextEntries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = TextEntries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(Str(key)) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(TextEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// The value the shapes are read from: the legacy value itself, or the
/// object or array its top-level string holds as JSON text (shape 5).
pub enum Root<'a> {
    Itself(Json<'a>),
    Decoded(Box<RawValue>),
}

impl Root<'_> {
    pub fn json(&self) -> Json<'_> {
        match self {
            Self::Itself(json) => *json,
            Self::Decoded(text) => Json::Text(text),
        }
    }
}

/// Undoes one level of double encoding (shape 5): a top-level JSON string
/// whose content is a JSON object or array stands for that value. The
/// content is read like the reader's text, so it may be as hostile.
pub fn decode(json: Json<'_>) -> Root<'_> {
    if let Some(text) = json.as_str() {
        let inner = text.trim_start();
        if inner.starts_with('{') || inner.starts_with('[') {
            if let Ok(decoded) = serde_json::from_str::<Box<RawValue>>(&text) {
                return Root::Decoded(decoded);
            }
        }
    }
    Root::Itself(json)
}

/// One legacy value that may become a link.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The source key as written: an object's key, or the field of an
    /// entry object that names its platform.
    pub key: Option<Cow<'a, str>>,
    /// The URL value as found; anything but a string is rejected later.
    /// `None` when an entry object has no URL field at all.
    pub value: Option<Json<'a>>,
    /// An entry's explicit label, if any (a non-blank string).
    pub label: Option<Cow<'a, str>>,
    /// An entry's explicit `type`, if it names one of the four types.
    pub link_type: Option<LinkType>,
}

impl<'a> Candidate<'a> {
    fn plain(key: Option<Cow<'a, str>>, value: Json<'a>) -> Self {
        Self {
            key,
            value: Some(value),
            label: None,
            link_type: None,
        }
    }
}

/// The candidates of one profile, and whether they came from a JSON object
/// (whose entries must then be ordered by type and key, SPEC §2).
#[derive(Debug, Default)]
pub struct Candidates<'a> {
    pub items: Vec<Candidate<'a>>,
    pub from_object: bool,
}

/// Lists the candidate values of a (decoded, see [`decode`]) legacy value.
///
/// Top-level `null`, empty containers and blank strings hold nothing; a
/// top-level number or boolean is one keyless candidate (rejected later as
/// `not_a_string`), and so is a top-level string that is not JSON.
pub fn candidates(json: Json<'_>) -> Candidates<'_> {
    if let Some(entries) = json.entries() {
        // Shapes 1 and 2: the key is the object's key.
        let items = entries
            .map(|(key, value)| match value.entries() {
                Some(fields) => entry_candidate(Some(key), fields),
                None => Candidate::plain(Some(key), value),
            })
            .collect();
        return Candidates {
            items,
            from_object: true,
        };
    }
    if let Some(items) = json.items() {
        // Shapes 3 and 4: an entry object names its own key.
        let items = items
            .map(|value| match value.entries() {
                Some(fields) => entry_candidate(None, fields),
                None => Candidate::plain(None, value),
            })
            .collect();
        return Candidates {
            items,
            from_object: false,
        };
    }
    let holds_nothing = json.is_null() || json.as_str().is_some_and(|text| is_blank(&text));
    Candidates {
        items: if holds_nothing {
            Vec::new()
        } else {
            vec![Candidate::plain(None, json)]
        },
        from_object: false,
    }
}

/// The fields an entry object is read by (SPEC §2 Entry objects), each in
/// order of precedence: the first present one wins.
const URL_FIELDS: [&str; 4] = ["url", "href", "link", "value"];
/// The URL field's stand-in under a handle key, with no URL field.
const HANDLE_FIELDS: [&str; 2] = ["username", "handle"];
const KEY_FIELDS: [&str; 5] = ["platform", "key", "network", "service", "provider"];
/// With no key field: the first of these whose text names a platform.
const NAMING_FIELDS: [&str; 4] = ["name", "title", "icon", "type"];
/// After `label`: the first of these not taken as the key.
const LABEL_FIELDS: [&str; 3] = ["title", "name", "text"];
/// Every field name above, once: the slots of [`Fields`].
const FIELD_NAMES: [&str; 17] = [
    "url", "href", "link", "value", "username", "handle", "platform", "key", "network", "service",
    "provider", "name", "title", "icon", "type", "label", "text",
];

/// An entry object's fields that SPEC §2 reads, each the first field whose
/// name matches like a key (`URL`, ` Url `, `u_r_l` are `url`).
struct Fields<'a>([Option<Json<'a>>; FIELD_NAMES.len()]);

impl<'a> Fields<'a> {
    fn read(entries: Entries<'a>) -> Self {
        let mut found = [None; FIELD_NAMES.len()];
        for (name, value) in entries {
            let name = normalize_key(&name);
            if let Some(slot) = FIELD_NAMES.iter().position(|f| *f == name) {
                found[slot].get_or_insert(value);
            }
        }
        Self(found)
    }

    fn get(&self, name: &str) -> Option<Json<'a>> {
        let slot = FIELD_NAMES.iter().position(|f| *f == name)?;
        self.0[slot]
    }

    /// The first of `names` present, whatever its value.
    fn first(&self, names: &[&str]) -> Option<Json<'a>> {
        names.iter().find_map(|name| self.get(name))
    }

    /// A field's text when it is a non-blank string; any other value counts
    /// as absent.
    fn text(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get(name)?.as_str().filter(|text| !is_blank(text))
    }
}

/// An entry object (SPEC §2 Entry objects) under `key` (shape 2), or
/// naming its own key (shape 4).
fn entry_candidate<'a>(key: Option<Cow<'a, str>>, entries: Entries<'a>) -> Candidate<'a> {
    let fields = Fields::read(entries);
    let (key, key_field) = match key {
        Some(key) => (Some(key), None),
        None => entry_key(&fields),
    };
    let handle_key = key
        .as_deref()
        .is_some_and(|k| platforms::handle_url(&normalize_key(k)).is_some());
    let value = fields
        .first(&URL_FIELDS)
        .or_else(|| handle_key.then(|| fields.first(&HANDLE_FIELDS)).flatten());
    let label = fields.text("label").or_else(|| {
        LABEL_FIELDS
            .iter()
            .filter(|name| Some(**name) != key_field)
            .find_map(|name| fields.text(name))
    });
    let link_type = fields
        .get("type")
        .and_then(Json::as_str)
        .and_then(|text| LinkType::parse(&text));
    Candidate {
        key,
        value,
        label,
        link_type,
    }
}

/// A shape-4 entry's key, and the field it came from: the first key field,
/// else the first naming field whose text names a platform.
fn entry_key<'a>(fields: &Fields<'a>) -> (Option<Cow<'a, str>>, Option<&'static str>) {
    if let Some(key) = KEY_FIELDS.iter().find_map(|name| fields.text(name)) {
        return (Some(key), None);
    }
    NAMING_FIELDS
        .iter()
        .find_map(|name| {
            let text = fields.text(name)?;
            platforms::names_platform(&normalize_key(&text)).then_some((Some(text), Some(*name)))
        })
        .unwrap_or((None, None))
}

/// Nothing left after trimming and removing control characters: a blank
/// value holds nothing (SPEC §2).
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || c.is_control())
}

/// Normalizes a key for matching: case, surrounding whitespace, `-` and `_`
/// are ignored, so `Demo-Reel`, `demo_reel` and ` DEMOREEL ` are one key.
pub fn normalize_key(key: &str) -> String {
    key.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (key, URL value's raw text, label, type) of each candidate.
    type Seen = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<LinkType>,
    );

    fn seen(json: Json<'_>) -> Vec<Seen> {
        let root = decode(json);
        candidates(root.json())
            .items
            .iter()
            .map(|c| {
                (
                    c.key.as_deref().map(str::to_owned),
                    c.value.map(Json::raw),
                    c.label.as_deref().map(str::to_owned),
                    c.link_type,
                )
            })
            .collect()
    }

    /// The same value read parsed and as PostgreSQL's text of it.
    fn both(value: &Value) -> Vec<Seen> {
        let from_value = seen(value.into());
        let social = parse(&value.to_string());
        assert_eq!(seen((&social).into()), from_value, "{value}");
        from_value
    }

    fn one(key: Option<&str>, value: Option<&str>, label: Option<&str>) -> Seen {
        (
            key.map(str::to_owned),
            value.map(str::to_owned),
            label.map(str::to_owned),
            None,
        )
    }

    #[test]
    fn empty_values_hold_nothing() {
        for v in [
            json!(null),
            json!({}),
            json!([]),
            json!(""),
            json!(" \n "),
            json!("\u{0}\u{7} \u{3000}"),
        ] {
            assert!(both(&v).is_empty(), "{v}");
        }
    }

    #[test]
    fn scalars_are_one_keyless_candidate() {
        for (v, raw) in [
            (json!(42), "42"),
            (json!(true), "true"),
            (json!(-1.5), "-1.5"),
            (json!("not json"), "not json"),
        ] {
            assert_eq!(both(&v), [one(None, Some(raw), None)], "{v}");
        }
    }

    #[test]
    fn double_encoded_object_and_array_are_decoded_once() {
        let v = json!(r#"{"website": "https://a.com"}"#);
        assert_eq!(
            both(&v),
            [one(Some("website"), Some("https://a.com"), None)]
        );
        let v = json!(r#" ["https://a.com"]"#);
        assert_eq!(both(&v), [one(None, Some("https://a.com"), None)]);
        // A string holding a JSON string is not decoded again.
        let v = json!(r#""{\"a\":1}""#);
        assert_eq!(both(&v), [one(None, Some(r#""{\"a\":1}""#), None)]);
        // Not JSON: stays a string.
        let v = json!("{not json");
        assert_eq!(both(&v), [one(None, Some("{not json"), None)]);
        // A string item inside a decoded array is never decoded again.
        let v = json!(r#"["{\"website\": \"https://a.com\"}"]"#);
        assert_eq!(
            both(&v),
            [one(None, Some(r#"{"website": "https://a.com"}"#), None)]
        );
    }

    #[test]
    fn a_text_that_is_not_json_is_one_string() {
        let social = parse("{oops");
        assert_eq!(seen((&social).into()), [one(None, Some("{oops"), None)]);
    }

    #[test]
    fn url_fields_fall_back_in_order_and_match_like_keys() {
        let v = json!([
            {"HREF": "h", "Link": "l", "Value": "v", "Platform": "imdb", "key": "x"},
            {"value": "v", "link": "l"},
            {"value": "v"},
            {"url": null, "href": "h"},
            {"u_r_l": " u "},
        ]);
        let values: Vec<_> = both(&v).into_iter().map(|s| s.1).collect();
        assert_eq!(
            values,
            [
                Some("h".into()),
                Some("l".into()),
                Some("v".into()),
                Some("null".into()),
                Some(" u ".into())
            ]
        );
    }

    #[test]
    fn an_entry_without_url_field_has_no_value() {
        let v = json!([{"label": "x"}, {"username": "jack"}]);
        assert!(both(&v).iter().all(|s| s.1.is_none()));
    }

    #[test]
    fn key_fields_in_order() {
        for (entry, key) in [
            (json!({"platform": "a", "key": "b"}), "a"),
            (json!({"key": "b", "network": "c"}), "b"),
            (json!({"network": "c", "service": "d"}), "c"),
            (json!({"service": "d", "provider": "e"}), "d"),
            (json!({"provider": "e", "name": "github"}), "e"),
            // Non-string and blank key fields count as absent.
            (json!({"platform": 5, "key": " ", "network": "c"}), "c"),
        ] {
            assert_eq!(both(&json!([entry]))[0].0.as_deref(), Some(key), "{entry}");
        }
    }

    #[test]
    fn naming_fields_give_the_key_only_when_they_name_a_platform() {
        for (entry, key) in [
            (
                json!({"name": "GitHub", "title": "twitter"}),
                Some("GitHub"),
            ),
            (json!({"name": "Jane", "title": "Twitter"}), Some("Twitter")),
            (
                json!({"name": "Jane", "icon": "instagram"}),
                Some("instagram"),
            ),
            (json!({"type": "MASTODON"}), Some("MASTODON")),
            (json!({"type": "Demo_Reel"}), Some("Demo_Reel")),
            (json!({"icon": "fa-brands fa-github"}), None),
            (
                json!({"name": "Jane", "title": "My blog", "type": "steam"}),
                None,
            ),
        ] {
            assert_eq!(both(&json!([entry]))[0].0.as_deref(), key, "{entry}");
        }
        // In shape 2 the outer key is the key, whatever the fields say.
        let v = json!({"blog": {"url": "u", "platform": "imdb", "name": "github"}});
        assert_eq!(both(&v)[0].0.as_deref(), Some("blog"));
    }

    #[test]
    fn labels_in_order_skipping_the_field_taken_as_key() {
        for (entry, label) in [
            (
                json!({"label": "L", "title": "T", "name": "N", "text": "X"}),
                Some("L"),
            ),
            (json!({"label": " ", "title": "T", "name": "N"}), Some("T")),
            (json!({"label": 7, "name": "N", "text": "X"}), Some("N")),
            (json!({"text": "X"}), Some("X")),
            // title names the platform: it is the key, not the label.
            (json!({"title": "Twitter", "name": "Jane"}), Some("Jane")),
            (json!({"title": "Twitter"}), None),
            // With a key field, a platform name in title is a label.
            (
                json!({"platform": "x", "title": "Twitter"}),
                Some("Twitter"),
            ),
        ] {
            assert_eq!(both(&json!([entry]))[0].2.as_deref(), label, "{entry}");
        }
        // The same fields in shape 2.
        let v = json!({"github": {"url": "u", "name": "GitHub"}});
        assert_eq!(both(&v)[0].2.as_deref(), Some("GitHub"));
    }

    #[test]
    fn explicit_types() {
        for (entry, ty) in [
            (json!({"type": " IMDb "}), Some(LinkType::Imdb)),
            (json!({"type": "Other"}), Some(LinkType::Other)),
            (json!({"type": "MASTODON"}), None),
            (json!({"type": 1}), None),
        ] {
            assert_eq!(both(&json!([entry]))[0].3, ty, "{entry}");
            assert_eq!(both(&json!({"k": entry}))[0].3, ty, "{entry}");
        }
    }

    #[test]
    fn handle_fields_only_under_a_handle_key() {
        let v = json!([
            {"network": "Twitter", "username": "jack", "handle": "h"},
            {"service": "instagram", "handle": "jane"},
            {"type": "TIKTOK", "username": "dancer"},
            {"network": "github", "username": "octocat"},
            {"username": "nobody"},
            {"platform": "x", "url": "", "username": "jack"},
        ]);
        let values: Vec<_> = both(&v).into_iter().map(|s| s.1).collect();
        assert_eq!(
            values,
            [
                Some("jack".into()),
                Some("jane".into()),
                Some("dancer".into()),
                None,
                None,
                Some(String::new())
            ]
        );
        let v = json!({"YouTube": {"username": "creator"}});
        assert_eq!(both(&v)[0].1.as_deref(), Some("creator"));
    }

    #[test]
    fn object_values_that_are_not_entries() {
        let v = json!({"a": "https://a.com", "b": [1, {"c": 2}], "n": null, "x": 1.5});
        assert_eq!(
            both(&v),
            [
                one(Some("a"), Some("https://a.com"), None),
                one(Some("b"), Some(r#"[1,{"c":2}]"#), None),
                one(Some("n"), Some("null"), None),
                one(Some("x"), Some("1.5"), None),
            ]
        );
        assert!(candidates((&v).into()).from_object);
    }

    #[test]
    fn keys_and_strings_with_escapes() {
        let v = json!({"we\"b": "https://a.com/\u{e9}\t", "\u{1F980}": "\\"});
        assert_eq!(
            both(&v),
            [
                one(Some("we\"b"), Some("https://a.com/\u{e9}\t"), None),
                one(Some("\u{1F980}"), Some("\\"), None),
            ]
        );
    }

    /// PostgreSQL's text: blanks after `:` and `,`, keys by length, numbers
    /// as written. Raw texts keep what was written, without the blanks.
    #[test]
    fn raw_texts_of_postgresql_output() {
        let social = parse(r#"{"b": [1, 2.50, {"k": "a b"}], "aa": 1e400, "c": "x"}"#);
        let raws: Vec<_> = seen((&social).into()).into_iter().map(|s| s.1).collect();
        assert_eq!(
            raws,
            [
                Some(r#"[1,2.50,{"k":"a b"}]"#.into()),
                Some("1e400".into()),
                Some("x".into())
            ]
        );
    }

    #[test]
    fn hostile_parts_beside_a_valid_link_at_any_depth() {
        // Beyond serde_json's 128 levels, at 5,000, at the deepest
        // PostgreSQL 15 accepted here with max_stack_depth = 2MB (14,544
        // for arrays), and far beyond; on the test thread's 2 MiB stack.
        for depth in [200, 5_000, 14_544, 1_000_000] {
            let deep = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            let deep_object = format!(
                "{}1{}",
                r#"{"a": "#.repeat(depth - 1),
                "}".repeat(depth - 1)
            );
            let text = format!(
                r#"{{"website": "https://a.example/", "deep": {deep}, "deeper": {deep_object}}}"#
            );
            let s = seen((&parse(&text)).into());
            assert_eq!(s.len(), 3, "depth {depth}");
            assert_eq!(s[0].1.as_deref(), Some("https://a.example/"));
            assert_eq!(s[1].1.as_deref(), Some(deep.as_str()));
            assert_eq!(s[2].1, None, "an entry object without URL field");
            let text = format!(r#"["https://a.example/", {{"url": {deep}}}, {deep}]"#);
            let s = seen((&parse(&text)).into());
            assert_eq!(s.len(), 3, "depth {depth}");
            assert_eq!(s[0].1.as_deref(), Some("https://a.example/"));
            assert_eq!(s[1].1.as_deref(), Some(deep.as_str()));
            assert_eq!(s[2].1.as_deref(), Some(deep.as_str()));
        }
    }

    #[test]
    fn numbers_beyond_f64_and_long_integers_are_kept_as_written() {
        let sixty = "123456789012345678901234567890123456789012345678901234567890";
        let huge = format!("1{}", "0".repeat(400));
        let text = format!(r#"["https://a.example/", {huge}, {sixty}, -1e-400]"#);
        let raws: Vec<_> = seen((&parse(&text)).into())
            .into_iter()
            .map(|s| s.1)
            .collect();
        assert_eq!(
            raws,
            [
                Some("https://a.example/".into()),
                Some(huge),
                Some(sixty.into()),
                Some("-1e-400".into())
            ]
        );
    }

    #[test]
    fn a_ten_megabyte_string_is_borrowed_not_copied() {
        let big = "a".repeat(10 * 1024 * 1024);
        let text = format!(r#"["https://a.example/", "{big}"]"#);
        let social = parse(&text);
        let root = decode((&social).into());
        let found = candidates(root.json());
        assert_eq!(found.items.len(), 2);
        let value = found.items[1]
            .value
            .and_then(Json::as_str)
            .expect("a string");
        assert!(matches!(value, Cow::Borrowed(_)));
        assert_eq!(value.len(), big.len());
    }

    #[test]
    fn double_encoded_hostile_values_are_read_the_same_way() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let inner = format!(r#"["https://a.example/", {deep}, 1e999]"#);
        let v = Value::String(inner);
        let s = both(&v);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].1.as_deref(), Some("1e999"));
    }

    #[test]
    fn keys_normalize() {
        assert_eq!(normalize_key("Demo-Reel"), "demoreel");
        assert_eq!(normalize_key("demo_reel"), "demoreel");
        assert_eq!(normalize_key("  DEMOREEL "), "demoreel");
        assert_eq!(normalize_key("demo reel"), "demo reel");
        assert_eq!(normalize_key(" H_R-E-F"), "href");
    }

    #[test]
    fn blank_means_only_whitespace_and_control_characters() {
        for text in ["", " ", "\u{0}", "\t\u{7f}\u{3000}\u{85}"] {
            assert!(is_blank(text), "{text:?}");
        }
        for text in ["a", "\u{200b}", " . "] {
            assert!(!is_blank(text), "{text:?}");
        }
    }
}
