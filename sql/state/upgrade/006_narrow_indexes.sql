-- State schema version 6: narrower indexes on the ledger and the rejects,
-- so that a run's bookkeeping writes less WAL beside its links (SPEC §11:
-- WAL per link within 1.15x a bare load of the same rows).
--
-- The ledger's primary key (user_id, profile_id, run_id) wrote an index
-- record of about 100 bytes per profile, nearly as much WAL as the ledger
-- row itself. Every lookup goes by user and profile (a user has one
-- profile, rarely more), and nothing relied on the key's uniqueness: a
-- chunk retried after a lost COMMIT finds its committed profiles by their
-- run (sink.rs), not by a unique violation. An index on user_id alone keeps
-- the user order, so a run's inserts still land at its right edge, with
-- less than half the bytes.
ALTER TABLE {state}.ledger DROP CONSTRAINT IF EXISTS ledger_pkey;
CREATE INDEX IF NOT EXISTS ledger_user_id_idx ON {state}.ledger (user_id);

-- rejects (profile_id): made by version 1 for its rejects table. Version 4
-- rebuilt that table with an index by (user_id, profile_id) instead, but
-- version 1's script, run at every start, made this one again on the new
-- table. Nothing reads by profile id alone, and with random profile ids
-- each reject's entry landed on a random page of it (a full page of WAL
-- after every checkpoint).
DROP INDEX IF EXISTS {state}.rejects_profile_id_idx;
