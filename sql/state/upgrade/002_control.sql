-- State schema version 2: operator control and visible waits (SPEC §13).
-- Applied once, in the upgrade transaction of `state::ensure_schema`.

-- `relink pause` records a pause here; `relink resume` closes it. While a
-- pause is in force every run and purge of this state schema waits before
-- its next chunk. Kept as history: who held the migration, when and why.
CREATE TABLE {state}.pauses (
    id          BIGSERIAL PRIMARY KEY,
    paused_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    paused_by   TEXT NOT NULL,
    reason      TEXT,
    resumed_at  TIMESTAMPTZ,
    resumed_by  TEXT
);
-- At most one pause in force at a time.
CREATE UNIQUE INDEX pauses_in_force ON {state}.pauses ((true)) WHERE resumed_at IS NULL;

-- What a run or purge is waiting for right now (NULL when it is not), and
-- since when, so `relink status` can show it.
ALTER TABLE {state}.runs ADD COLUMN waiting TEXT, ADD COLUMN waiting_since TIMESTAMPTZ;
