-- The application's schema, as its own migrations create it (SPEC §1).
-- A copy for tests, the demo, benchmarks and staging rehearsals:
-- relink itself never creates, alters or drops these tables.
CREATE TABLE users (
    id TEXT PRIMARY KEY
);

CREATE TABLE profiles (
    id TEXT PRIMARY KEY,
    "userId" TEXT NOT NULL UNIQUE REFERENCES users(id),
    "socialLinks" JSONB
);

CREATE TABLE profile_links (
    id TEXT PRIMARY KEY,
    "userId" TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    "profileId" TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    url TEXT NOT NULL,
    type TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE INDEX "profile_links_userId_idx" ON profile_links ("userId");
CREATE INDEX "profile_links_profileId_idx" ON profile_links ("profileId");
CREATE INDEX "profile_links_userId_position_idx" ON profile_links ("userId", position);
