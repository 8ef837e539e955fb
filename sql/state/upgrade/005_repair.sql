-- State schema version 5: `relink repair` (SPEC §9) keeps a run record of
-- its own, like run and purge: who mended what and when, its counters, and
-- the checkpoint it resumes after.
ALTER TABLE {state}.runs DROP CONSTRAINT IF EXISTS runs_mode_check;
ALTER TABLE {state}.runs ADD CONSTRAINT runs_mode_check CHECK (mode IN ('run', 'purge', 'repair'));
