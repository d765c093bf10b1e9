-- Destinations (core::activate::deliver): the outbox and the delivery log in one table. Ingest
-- adds a `pending` row per (destination, event) in the same batch as the event; the queue
-- consumer claims it (`sending`, with a lease in `next_at`), calls the destination and ends it
-- `delivered`, `pending` again (a retry due at `next_at`), `dead` (replayable) or `skipped`.
CREATE TABLE deliveries (
  destination      TEXT    NOT NULL,
  source_id        TEXT    NOT NULL,
  message_id       TEXT    NOT NULL,
  status           TEXT    NOT NULL,
  attempts         INTEGER NOT NULL DEFAULT 0,
  created_at       INTEGER NOT NULL,
  next_at          INTEGER NOT NULL,
  first_attempt_at INTEGER,
  updated_at       INTEGER NOT NULL,
  last_status      INTEGER,
  last_error       TEXT,
  -- What to send when it is not a stored event: an erasure forwarded to the destination
  -- (source_id '$erasure'). Cleared once delivered or skipped.
  payload          TEXT,
  PRIMARY KEY (destination, source_id, message_id)
) WITHOUT ROWID;

-- The sweep's question: what is overdue?
CREATE INDEX deliveries_due ON deliveries (status, next_at);
-- The admin API's: a destination's newest deliveries, by status; and retention's.
CREATE INDEX deliveries_by_destination ON deliveries (destination, status, updated_at);

-- Outcomes per destination and hour (delivered, retried, dead, skipped), kept after the rows
-- themselves are pruned.
CREATE TABLE delivery_counts (
  destination TEXT    NOT NULL,
  hour        INTEGER NOT NULL, -- epoch ms at the start of the hour
  outcome     TEXT    NOT NULL,
  count       INTEGER NOT NULL,
  PRIMARY KEY (destination, hour, outcome)
) WITHOUT ROWID;
