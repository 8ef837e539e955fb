-- Reverses up.sql (tests, demo and rehearsal databases only).
DROP TABLE IF EXISTS profile_links;
DROP TABLE IF EXISTS profiles;
DROP TABLE IF EXISTS users;
