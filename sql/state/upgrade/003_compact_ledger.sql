-- State schema version 3: a compact ledger (SPEC §11), whose size follows
-- the profiles, not the number of reruns.
--
-- Version 1 wrote one row per profile per run that planned it, each with
-- the user id, a text md5, the created link ids (derivable: UUID v5 of the
-- profile id and the key) beside their keys, and a foreign key to runs
-- checked on every insert. Version 3 keeps a row per profile per run that
-- CREATED something (links, or keys found among the user's rows), and the
-- fingerprint, as bytes, on the profile's latest row only; a rerun that
-- replans a profile without creating anything updates that fingerprint in
-- place. Purge --run ID, edit detection (migrated_at) and "a link the user
-- deleted stays deleted" (link_keys, kept_keys) keep what they need.
ALTER TABLE {state}.ledger RENAME TO ledger_v2;
ALTER TABLE {state}.ledger_v2 RENAME CONSTRAINT ledger_pkey TO ledger_v2_pkey;

CREATE TABLE {state}.ledger (
    profile_id  TEXT NOT NULL,
    run_id      BIGINT NOT NULL,
    -- the fingerprint of "socialLinks" as last planned (8 bytes: its jsonb
    -- hash; 16: the md5 of its text that version 1 stored); only on the
    -- profile's latest row; NULL on older rows and after a purge (pending)
    fingerprint BYTEA,
    -- comparison keys of the rows this run created (ids are UUID v5 of the
    -- profile id and the key)
    link_keys   TEXT[] NOT NULL,
    -- keys of legacy links the user already had: accounted for, and not
    -- created if the user deletes their row; NULL when none
    kept_keys   TEXT[],
    -- the "createdAt"/"updatedAt" the rows got, so purge can tell edits
    migrated_at TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (profile_id, run_id)
);

-- Rows that created something, and each profile's latest row.
INSERT INTO {state}.ledger (profile_id, run_id, fingerprint, link_keys, kept_keys, migrated_at)
SELECT profile_id, run_id,
       CASE WHEN latest AND fingerprint ~ '^[0-9a-f]{32}$' THEN decode(fingerprint, 'hex') END,
       link_keys, nullif(existing_keys, '{}'), migrated_at
  FROM (SELECT l.*, run_id = max(run_id) OVER (PARTITION BY profile_id) AS latest
          FROM {state}.ledger_v2 l) v
 WHERE latest OR cardinality(link_keys) > 0 OR cardinality(existing_keys) > 0
 ORDER BY profile_id, run_id;

DROP TABLE {state}.ledger_v2;

-- relink keeps these consistent itself; a foreign-key check per inserted
-- row (and a shared lock on the run's row, taken by every writer) is cost
-- without benefit.
ALTER TABLE {state}.rejects DROP CONSTRAINT IF EXISTS rejects_run_id_fkey;
