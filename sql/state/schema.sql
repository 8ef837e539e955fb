-- relink's own bookkeeping (SPEC §1), in its own schema; {state} is replaced
-- by the quoted --state-schema. Idempotent: run by every live `run` and
-- `purge` under the advisory lock. Version 1; later releases add numbered
-- upgrade steps and bump meta.schema_version.
CREATE SCHEMA IF NOT EXISTS {state};

CREATE TABLE IF NOT EXISTS {state}.meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO {state}.meta (key, value) VALUES ('schema_version', '1')
ON CONFLICT (key) DO NOTHING;

-- One row per invocation series: a run that is interrupted and resumed keeps
-- its id. checkpoint is the last profile id below which every profile is
-- committed (keyset position, compared in the column's collation).
CREATE TABLE IF NOT EXISTS {state}.runs (
    id          BIGSERIAL PRIMARY KEY,
    mode        TEXT NOT NULL CHECK (mode IN ('run', 'purge')),
    status      TEXT NOT NULL CHECK (status IN ('running', 'completed', 'partial', 'interrupted', 'failed', 'abandoned')),
    options     JSONB NOT NULL,
    checkpoint  TEXT,
    counters    JSONB NOT NULL DEFAULT '{}',
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    error       TEXT
);

-- The ledger: one row per profile per run that planned it. fingerprint is
-- md5 of the legacy value's text as it was planned; link_ids/link_keys are
-- the rows this run created (parallel arrays); migrated_at is the value the
-- rows got as "createdAt"/"updatedAt", so purge can tell edited rows.
CREATE TABLE IF NOT EXISTS {state}.ledger (
    profile_id  TEXT NOT NULL,
    run_id      BIGINT NOT NULL REFERENCES {state}.runs (id),
    user_id     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    link_ids    TEXT[] NOT NULL,
    link_keys   TEXT[] NOT NULL,
    -- keys of legacy links dropped because the user already had that link:
    -- accounted for, and not re-created if the user deletes their row
    existing_keys TEXT[] NOT NULL DEFAULT '{}',
    migrated_at TIMESTAMP(3) NOT NULL,
    PRIMARY KEY (profile_id, run_id)
);

-- Legacy values that became no link, with the reason; the latest planning
-- of each profile only (older rows are replaced when a profile is replanned).
CREATE TABLE IF NOT EXISTS {state}.rejects (
    run_id     BIGINT NOT NULL REFERENCES {state}.runs (id),
    profile_id TEXT NOT NULL,
    source_key TEXT,
    raw_value  TEXT NOT NULL,
    reason     TEXT NOT NULL
);
-- (Version 1 also indexed rejects by profile_id; that index is left out
-- here since this script runs at every start, and made it again on the
-- table version 4 rebuilt: see upgrade 006.)
