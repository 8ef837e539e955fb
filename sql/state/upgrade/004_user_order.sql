-- State schema version 4: the ledger and the rejects in the run's order
-- (SPEC §6 "Write order").
--
-- A live run now reads and writes profiles in "userId" order. Keyed by
-- profile id, every ledger row (and every reject) it adds landed on a
-- random page of its index, and after each server checkpoint nearly every
-- such insert wrote that whole page to WAL again; keyed by user first, the
-- run's rows are appended at the index's right edge, as its links are.
-- Lookups go by (user_id, profile_id): every reader has both.
--
-- Rows of profiles deleted since have no user to find: they get '' (they
-- matched no profile before either, and their links went with the
-- profile); kept so that purge --run and the ledger's history stay whole.
ALTER TABLE {state}.ledger RENAME TO ledger_v3;
ALTER TABLE {state}.ledger_v3 RENAME CONSTRAINT ledger_pkey TO ledger_v3_pkey;

CREATE TABLE {state}.ledger (
    -- the profile's "userId" when it was planned
    user_id     TEXT NOT NULL,
    profile_id  TEXT NOT NULL,
    run_id      BIGINT NOT NULL,
    -- the fingerprint of "socialLinks" as last planned (8 bytes: its jsonb
    -- hash; 16: the md5 of its text that version 1 stored); only on the
    -- profile's latest row; NULL on older rows and after a purge (pending)
    fingerprint BYTEA,
    -- comparison keys of the rows this run created (a row's id derives from
    -- the profile id, the user id and the key: SPEC §5)
    link_keys   TEXT[] NOT NULL,
    -- keys of legacy links the user already had: accounted for, and not
    -- created if the user deletes their row; NULL when none
    kept_keys   TEXT[],
    -- the "createdAt"/"updatedAt" the rows got, so purge can tell edits
    migrated_at TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (user_id, profile_id, run_id)
);

INSERT INTO {state}.ledger (user_id, profile_id, run_id, fingerprint, link_keys, kept_keys, migrated_at)
SELECT coalesce(p."userId", ''), l.profile_id, l.run_id, l.fingerprint, l.link_keys, l.kept_keys, l.migrated_at
  FROM {state}.ledger_v3 l LEFT JOIN {app}.profiles p ON p.id = l.profile_id
 ORDER BY 1, 2, 3;

DROP TABLE {state}.ledger_v3;

ALTER TABLE {state}.rejects RENAME TO rejects_v3;

CREATE TABLE {state}.rejects (
    run_id     BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    source_key TEXT,
    raw_value  TEXT NOT NULL,
    reason     TEXT NOT NULL
);

INSERT INTO {state}.rejects (run_id, user_id, profile_id, source_key, raw_value, reason)
SELECT r.run_id, coalesce(p."userId", ''), r.profile_id, r.source_key, r.raw_value, r.reason
  FROM {state}.rejects_v3 r LEFT JOIN {app}.profiles p ON p.id = r.profile_id
 ORDER BY 2, 3;

DROP TABLE {state}.rejects_v3;
CREATE INDEX rejects_user_id_idx ON {state}.rejects (user_id, profile_id);
