-- State schema version 7: the ledger's rows, and the rejects, in a compact
-- form, so that a run's bookkeeping writes less WAL beside its links
-- (SPEC §11: WAL per link within 1.15x a bare load of the same rows).
--
-- Version 6's row was some 210 bytes a profile, more than a third of it
-- the user and profile ids as text (37 bytes each for a UUID) and the link
-- keys as a text array (24 bytes of array header, 4 more per key). The
-- rows now live in ledger_rows:
--   * an id that is a UUID in canonical form (lowercase, hyphenated, as
--     uuid's own output writes it) is kept as a uuid (16 bytes) in
--     user_uuid/profile_uuid, any other id as it is in user_text/
--     profile_text; exactly one of each pair is set, and uuid::text gives
--     the id back character for character;
--   * link_keys/kept_keys are the keys joined by newlines (a key is a
--     parsed URL's host, path and query: it never holds one); '' for none,
--     and kept_keys NULL for none;
--   * the fixed-width columns first, so no padding sits between them.
-- About 135 bytes a row.
--
-- {state}.ledger is now a view giving the rows in version 6's form (ids as
-- text, keys as arrays): what every reader, and an operator's query,
-- reads. Its index is on the user id as text, the expression the view
-- gives, so lookups by user (and the keyset bound a run's page query puts
-- on them) use it as before, in the same collation and order: a run still
-- appends to its right edge. (src/state/stored.rs writes these forms.)
--
-- The rejects likewise: their ids in reject_rows, the view {state}.rejects
-- in version 6's form, indexed by the user id alone (every lookup has the
-- profile too; a user has one profile, rarely more), not (user_id,
-- profile_id).
ALTER TABLE {state}.ledger RENAME TO ledger_v6;
ALTER INDEX {state}.ledger_user_id_idx RENAME TO ledger_v6_user_id_idx;

CREATE TABLE {state}.ledger_rows (
    run_id       BIGINT NOT NULL,
    -- the "createdAt"/"updatedAt" the rows got, so purge can tell edits
    migrated_at  TIMESTAMP(3) NOT NULL,
    -- the profile's "userId" when it was planned, and its id (one of each
    -- pair set: see above)
    user_uuid    UUID,
    profile_uuid UUID,
    -- the fingerprint of "socialLinks" as last planned (8 bytes: its jsonb
    -- hash; 16: the md5 of its text that version 1 stored); only on the
    -- profile's latest row; NULL on older rows and after a purge (pending)
    fingerprint  BYTEA,
    user_text    TEXT,
    profile_text TEXT,
    -- comparison keys of the rows this run created, newline-separated (a
    -- row's id derives from the profile id, the user id and the key: SPEC §5)
    link_keys    TEXT NOT NULL,
    -- keys of legacy links the user already had: accounted for, and not
    -- created if the user deletes their row; NULL when none
    kept_keys    TEXT,
    CHECK ((user_uuid IS NULL) <> (user_text IS NULL)),
    CHECK ((profile_uuid IS NULL) <> (profile_text IS NULL))
);

-- An id as a uuid when it is one in canonical form (what uuid::text gives
-- back character for character; src/state/stored.rs is the same rule for
-- new rows), else NULL: then the text column holds it. For this upgrade
-- only, in relink's own schema (a role may not be allowed temporary
-- objects), dropped at its end.
CREATE FUNCTION {state}.canonical_uuid_v7(id TEXT) RETURNS UUID
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN id::uuid END $$;

INSERT INTO {state}.ledger_rows
       (run_id, migrated_at, user_uuid, profile_uuid, fingerprint, user_text, profile_text, link_keys, kept_keys)
SELECT run_id, migrated_at, user_uuid, profile_uuid, fingerprint,
       CASE WHEN user_uuid IS NULL THEN user_id END,
       CASE WHEN profile_uuid IS NULL THEN profile_id END,
       array_to_string(link_keys, E'\n'),
       nullif(array_to_string(kept_keys, E'\n'), '')
  FROM (SELECT l.*,
               {state}.canonical_uuid_v7(user_id) AS user_uuid,
               {state}.canonical_uuid_v7(profile_id) AS profile_uuid
          FROM {state}.ledger_v6 l) v
 ORDER BY user_id, profile_id, run_id;

DROP TABLE {state}.ledger_v6;

CREATE INDEX ledger_rows_user_id_idx ON {state}.ledger_rows ((coalesce(user_uuid::text, user_text)));

CREATE VIEW {state}.ledger AS
SELECT coalesce(user_uuid::text, user_text) AS user_id,
       coalesce(profile_uuid::text, profile_text) AS profile_id,
       run_id,
       fingerprint,
       string_to_array(link_keys, E'\n') AS link_keys,
       string_to_array(kept_keys, E'\n') AS kept_keys,
       migrated_at
  FROM {state}.ledger_rows;

ALTER TABLE {state}.rejects RENAME TO rejects_v6;

CREATE TABLE {state}.reject_rows (
    run_id       BIGINT NOT NULL,
    user_uuid    UUID,
    profile_uuid UUID,
    user_text    TEXT,
    profile_text TEXT,
    source_key   TEXT,
    raw_value    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    CHECK ((user_uuid IS NULL) <> (user_text IS NULL)),
    CHECK ((profile_uuid IS NULL) <> (profile_text IS NULL))
);

INSERT INTO {state}.reject_rows
       (run_id, user_uuid, profile_uuid, user_text, profile_text, source_key, raw_value, reason)
SELECT run_id, user_uuid, profile_uuid,
       CASE WHEN user_uuid IS NULL THEN user_id END,
       CASE WHEN profile_uuid IS NULL THEN profile_id END,
       source_key, raw_value, reason
  FROM (SELECT r.*,
               {state}.canonical_uuid_v7(user_id) AS user_uuid,
               {state}.canonical_uuid_v7(profile_id) AS profile_uuid
          FROM {state}.rejects_v6 r) v
 ORDER BY user_id, profile_id;

DROP TABLE {state}.rejects_v6;

CREATE INDEX reject_rows_user_id_idx ON {state}.reject_rows ((coalesce(user_uuid::text, user_text)));

CREATE VIEW {state}.rejects AS
SELECT run_id,
       coalesce(user_uuid::text, user_text) AS user_id,
       coalesce(profile_uuid::text, profile_text) AS profile_id,
       source_key,
       raw_value,
       reason
  FROM {state}.reject_rows;

DROP FUNCTION {state}.canonical_uuid_v7(TEXT);
