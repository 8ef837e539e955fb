//! The ledger's and the rejects' rows as stored (state schema 7,
//! `sql/state/upgrade/007_compact_rows.sql`): an id in canonical UUID form
//! as a `uuid`, any other as text; the link keys joined by newlines.
//! Readers read the views `{state}.ledger` and `{state}.rejects`, which give
//! them back as text and arrays; only the writers need these forms.

use uuid::Uuid;

/// The table the ledger's rows are written to (the view `{state}.ledger`
/// reads them).
pub const LEDGER_ROWS: &str = "{state}.ledger_rows";

/// The columns of [`LEDGER_ROWS`] a new row is copied into, in this order.
pub const LEDGER_COLUMNS: &str = "(run_id, migrated_at, user_uuid, profile_uuid, fingerprint, \
                                  user_text, profile_text, link_keys, kept_keys)";

/// The table the rejects are written to (the view `{state}.rejects` reads
/// them), and the columns a new one is copied into, in this order.
pub const REJECT_ROWS: &str = "{state}.reject_rows";
pub const REJECT_COLUMNS: &str = "(run_id, user_uuid, profile_uuid, user_text, profile_text, \
                                  source_key, raw_value, reason)";

/// A row's user id and profile id as text, from their stored pair: the
/// views' `user_id` and `profile_id`, and the expression the indexes
/// `ledger_rows_user_id_idx` and `reject_rows_user_id_idx` are on (so a
/// condition on it is an index condition).
pub const USER_ID: &str = "coalesce(user_uuid::text, user_text)";
pub const PROFILE_ID: &str = "coalesce(profile_uuid::text, profile_text)";

/// Separates the keys in `link_keys` and `kept_keys`.
const KEY_SEPARATOR: char = '\n';

/// An id as the ledger stores it: exactly one of the two is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredId<'a> {
    /// The id as a `uuid`, when it is one in canonical form (lowercase and
    /// hyphenated: what `uuid::text` writes back, character for character).
    pub uuid: Option<Uuid>,
    /// Any other id, as it is.
    pub text: Option<&'a str>,
}

impl<'a> StoredId<'a> {
    pub fn of(id: &'a str) -> Self {
        let canonical = Uuid::try_parse(id)
            .ok()
            .filter(|uuid| uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == id);
        Self {
            uuid: canonical,
            text: canonical.is_none().then_some(id),
        }
    }
}

/// Keys as `link_keys`/`kept_keys` store them: joined by newlines, which
/// no key holds (a key is a parsed URL's host, path and query; the URL
/// parser drops tabs and newlines, and a link id's name puts a newline
/// before the key for the same reason).
pub fn joined_keys(keys: &[&str]) -> String {
    debug_assert!(
        keys.iter()
            .all(|k| !k.is_empty() && !k.contains(KEY_SEPARATOR)),
        "{keys:?}"
    );
    keys.join(&KEY_SEPARATOR.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuids_are_stored_as_uuids_and_everything_else_as_text() {
        let id = "0b3e5c1a-9f2d-4e8b-a1c7-5d6e7f809a1b";
        let stored = StoredId::of(id);
        assert_eq!(stored.uuid.map(|u| u.to_string()).as_deref(), Some(id));
        assert_eq!(stored.text, None);
        // Ids a uuid would not give back as they are stay text.
        for id in [
            "0B3E5C1A-9F2D-4E8B-A1C7-5D6E7F809A1B",
            "0b3e5c1a9f2d4e8ba1c75d6e7f809a1b",
            "{0b3e5c1a-9f2d-4e8b-a1c7-5d6e7f809a1b}",
            "urn:uuid:0b3e5c1a-9f2d-4e8b-a1c7-5d6e7f809a1b",
            "user-42",
            "",
        ] {
            assert_eq!(
                StoredId::of(id),
                StoredId {
                    uuid: None,
                    text: Some(id)
                },
                "{id}"
            );
        }
    }

    #[test]
    fn keys_are_joined_by_newlines() {
        assert_eq!(joined_keys(&[]), "");
        assert_eq!(
            joined_keys(&["github.com/ada", "example.com/a?b=1"]),
            "github.com/ada\nexample.com/a?b=1"
        );
    }
}
