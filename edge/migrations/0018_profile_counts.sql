-- Profiles and how many are identified, per UTC day (epoch day), counted by the segment sweep
-- (every five minutes: the day's row holds its latest count) so that the console's overview
-- reads one row instead of the identities index (core::identity::census).
CREATE TABLE profile_counts (
  day         INTEGER NOT NULL PRIMARY KEY,
  profiles    INTEGER NOT NULL,
  identified  INTEGER NOT NULL,
  counted_at  INTEGER NOT NULL
) WITHOUT ROWID;
