-- With profile shards an erasure deletes the subject's assignments in the shards after `DB`'s
-- transaction commits (before it, a retry after a failure would no longer find the person:
-- a deletion finds the profile through an assignment). That transaction records what is
-- still to go here; the erasure deletes the record once done, and the five-minute sweep
-- finishes any the erasure could not (core::identity::spread::followups_due).
CREATE TABLE erasure_followups (
  identifiers TEXT    NOT NULL,  -- JSON array of the subject's identifier text forms
  at          INTEGER NOT NULL   -- ms, when the erasure committed
);
CREATE INDEX erasure_followups_by_time ON erasure_followups (at);
