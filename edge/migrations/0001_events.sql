-- Raw events, one row per (source, messageId): the primary key is the dedup key, so a retried
-- batch stores nothing twice. `body` is the full event JSON, unknown fields included.
CREATE TABLE events (
  source_id    TEXT    NOT NULL,
  message_id   TEXT    NOT NULL,
  type         TEXT    NOT NULL,
  name         TEXT,
  anonymous_id TEXT,
  user_id      TEXT,
  timestamp    INTEGER NOT NULL, -- epoch ms, skew-corrected
  received_at  INTEGER NOT NULL, -- epoch ms
  body         TEXT    NOT NULL,
  PRIMARY KEY (source_id, message_id)
) WITHOUT ROWID;

CREATE INDEX events_by_anonymous_id ON events (source_id, anonymous_id, timestamp);
CREATE INDEX events_by_user_id ON events (source_id, user_id, timestamp);
CREATE INDEX events_by_received_at ON events (received_at);
