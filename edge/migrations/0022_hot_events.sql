-- D1 keeps only hot events (core::archive::compact, docs/scale.md). Compaction takes an
-- archived event, older than the hot window and owed to no destination, out of `events`;
-- what stays is a dedup key while the source's dedup window lasts, and which archive objects
-- hold a person's lines, so timelines, access requests and erasure find them in R2.

-- 8 bytes of SHA-256 over the source and message ID: a resend inside the window is a
-- duplicate though the row is gone.
-- WITHOUT ROWID: a rowid alias would make each insert's last_row_id a 64-bit hash, which the
-- Worker's bindings cannot read back as a number.
CREATE TABLE event_keys (
  key        INTEGER NOT NULL PRIMARY KEY,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_keys_by_expiry ON event_keys (expires_at);

-- The archive's objects as the index names them (an integer each, so the index stays small).
CREATE TABLE archive_objects (
  id        INTEGER PRIMARY KEY,
  claim     TEXT    NOT NULL,
  day       INTEGER NOT NULL, -- UTC epoch day
  source_id TEXT    NOT NULL,
  UNIQUE (claim, day, source_id)
);
CREATE INDEX archive_objects_by_day ON archive_objects (day);

-- Which objects hold lines of a person: `person` is 8 bytes of SHA-256 over a class ('a'
-- anonymous ID, 'u' user ID, 'c' a claimed email or phone) and the value.
CREATE TABLE archive_people (
  person INTEGER NOT NULL,
  object INTEGER NOT NULL,
  PRIMARY KEY (person, object)
) WITHOUT ROWID;
-- Retention drops the index rows of the days it deletes.
CREATE INDEX archive_people_by_object ON archive_people (object);

-- An erasure's person keys: a rebuilt object drops the lines they name that were received
-- before the erasure, whether D1 still held them or not.
CREATE TABLE archive_tombstones (
  person    INTEGER NOT NULL PRIMARY KEY,
  erased_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Where compaction goes on from (one row): rows it had to leave (owed to a destination, not yet
-- archived) are passed over until it comes round again, instead of read first every time.
CREATE TABLE archive_compaction (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  received_at INTEGER NOT NULL,
  source_id   TEXT    NOT NULL,
  message_id  TEXT    NOT NULL
);

-- Whether a destination still owes an event: compaction asks for each row it would take.
CREATE INDEX deliveries_by_event ON deliveries (source_id, message_id);
