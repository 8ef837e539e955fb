//! Legacy input shapes (SPEC §2): one `"socialLinks"` value in, the candidate
//! values it holds out, in source order, with their keys and any explicit
//! label or type. No URL rules here; those live in `classify`.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::link_type::LinkType;

/// One legacy value that may become a link.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    /// The source key as written (object key, or an entry's `platform`/`key`).
    pub key: Option<&'a str>,
    /// The URL value as found; anything but a string is rejected later.
    /// `None` when an entry object has no URL field at all.
    pub value: Option<&'a Value>,
    /// An entry's explicit `label`, if it is a string.
    pub label: Option<&'a str>,
    /// An entry's explicit `type`, if it names one of the four types.
    pub link_type: Option<LinkType>,
}

/// The candidates of one profile, and whether they came from a JSON object
/// (whose entries must then be ordered by type and key, SPEC §2).
#[derive(Debug, Default)]
pub struct Candidates<'a> {
    pub items: Vec<Candidate<'a>>,
    pub from_object: bool,
}

/// Undoes one level of double encoding (shape 5): a top-level JSON string
/// whose content is a JSON object or array stands for that value. Any other
/// value is returned as it is.
pub fn decode(value: &Value) -> Cow<'_, Value> {
    if let Value::String(text) = value {
        let inner = text.trim_start();
        if inner.starts_with('{') || inner.starts_with('[') {
            if let Ok(decoded @ (Value::Object(_) | Value::Array(_))) =
                serde_json::from_str::<Value>(text)
            {
                return Cow::Owned(decoded);
            }
        }
    }
    Cow::Borrowed(value)
}

/// Lists the candidate values of a (decoded, see [`decode`]) legacy value.
///
/// Top-level `null`, empty containers and blank strings hold nothing; a
/// top-level number or boolean is one keyless candidate (rejected later as
/// `not_a_string`), and so is a top-level string that is not JSON.
pub fn candidates(value: &Value) -> Candidates<'_> {
    match value {
        Value::Null => Candidates::default(),
        Value::String(s) if s.trim().is_empty() => Candidates::default(),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Candidates {
            items: vec![Candidate {
                key: None,
                value: Some(value),
                label: None,
                link_type: None,
            }],
            from_object: false,
        },
        Value::Object(map) => Candidates {
            items: map
                .iter()
                .map(|(key, v)| match v {
                    Value::Object(entry) => entry_candidate(Some(key.as_str()), entry),
                    _ => Candidate {
                        key: Some(key.as_str()),
                        value: Some(v),
                        label: None,
                        link_type: None,
                    },
                })
                .collect(),
            from_object: true,
        },
        Value::Array(items) => Candidates {
            items: items
                .iter()
                .map(|v| match v {
                    Value::Object(entry) => {
                        let key = field(entry, &["platform", "key"]).and_then(Value::as_str);
                        entry_candidate(key, entry)
                    }
                    _ => Candidate {
                        key: None,
                        value: Some(v),
                        label: None,
                        link_type: None,
                    },
                })
                .collect(),
            from_object: false,
        },
    }
}

/// An entry object (`{"url": …, "label": …, "type": …}`) under `key`.
fn entry_candidate<'a>(key: Option<&'a str>, entry: &'a Map<String, Value>) -> Candidate<'a> {
    Candidate {
        key,
        value: field(entry, &["url", "href", "link"]),
        label: field(entry, &["label"]).and_then(Value::as_str),
        link_type: field(entry, &["type"])
            .and_then(Value::as_str)
            .and_then(LinkType::parse),
    }
}

/// The first of `names` present in `entry`, field names matched like keys.
fn field<'a>(entry: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|name| {
        entry
            .iter()
            .find(|(k, _)| normalize_key(k) == *name)
            .map(|(_, v)| v)
    })
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

    fn keys(v: &Value) -> Vec<Option<&str>> {
        candidates(v).items.iter().map(|c| c.key).collect()
    }

    #[test]
    fn empty_values_hold_nothing() {
        for v in [json!(null), json!({}), json!([]), json!(""), json!(" \n ")] {
            assert!(candidates(&v).items.is_empty(), "{v}");
        }
    }

    #[test]
    fn scalars_are_one_keyless_candidate() {
        for v in [json!(42), json!(true), json!("not json")] {
            let c = candidates(&v);
            assert_eq!(c.items.len(), 1);
            assert_eq!(c.items[0].key, None);
            assert_eq!(c.items[0].value, Some(&v));
        }
    }

    #[test]
    fn double_encoded_object_and_array_are_decoded_once() {
        let v = json!(r#"{"website": "https://a.com"}"#);
        assert_eq!(*decode(&v), json!({"website": "https://a.com"}));
        let v = json!(r#"["https://a.com"]"#);
        assert_eq!(*decode(&v), json!(["https://a.com"]));
        // A string holding a JSON string is not decoded again.
        let v = json!(r#""{\"a\":1}""#);
        assert_eq!(*decode(&v), v);
        // Not JSON: stays a string.
        let v = json!("{not json");
        assert_eq!(*decode(&v), v);
    }

    #[test]
    fn entry_fields_fall_back_in_order_and_match_like_keys() {
        let v = json!([{"HREF": "h", "Link": "l", "Platform": "imdb", "key": "x"}]);
        let c = candidates(&v);
        assert_eq!(c.items[0].value, Some(&json!("h")));
        assert_eq!(c.items[0].key, Some("imdb"));
        let v = json!([{"link": "l", "key": "x", "label": "L", "type": " IMDb "}]);
        let c = candidates(&v);
        assert_eq!(c.items[0].value, Some(&json!("l")));
        assert_eq!(c.items[0].key, Some("x"));
        assert_eq!(c.items[0].label, Some("L"));
        assert_eq!(c.items[0].link_type, Some(LinkType::Imdb));
    }

    #[test]
    fn object_of_objects_uses_the_outer_key() {
        let v = json!({"imdb": {"url": "u", "label": "Me", "platform": "x"}});
        assert_eq!(keys(&v), vec![Some("imdb")]);
        assert!(candidates(&v).from_object);
    }

    #[test]
    fn missing_url_field_is_a_candidate_without_value() {
        let v = json!([{"label": "x"}]);
        assert_eq!(candidates(&v).items[0].value, None);
    }

    #[test]
    fn keys_normalize() {
        assert_eq!(normalize_key("Demo-Reel"), "demoreel");
        assert_eq!(normalize_key("demo_reel"), "demoreel");
        assert_eq!(normalize_key("  DEMOREEL "), "demoreel");
        assert_eq!(normalize_key("demo reel"), "demo reel");
    }
}
