-- Work on the identity assignments in the profile shards that a `DB` transaction leaves to be
-- done after it commits (core::identity::spread::Followup), recorded in that transaction and
-- deleted once done; the five-minute sweep finishes what is left older than a minute.
-- 'erase': an erasure deletes the subject's assignments in the shards only after `DB`
-- commits (before it, a retry after a failure would no longer find the person: a deletion
-- finds the profile through an assignment). 'resolve': a resolution writes `DB` (the
-- profiles' rows) before the shards' assignments, and one failing part way is resolved
-- again (its retry may not: its own links can look settled while another identifier of the
-- component was left behind).
CREATE TABLE followups (
  token       TEXT    NOT NULL PRIMARY KEY,  -- random, one per follow-up
  kind        TEXT    NOT NULL,              -- 'erase' or 'resolve'
  identifiers TEXT    NOT NULL,              -- JSON array of identifier text forms
  at          INTEGER NOT NULL               -- ms: when recorded, or last tried by the sweep
) WITHOUT ROWID;
CREATE INDEX followups_by_time ON followups (at);
