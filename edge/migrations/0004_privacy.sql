-- Privacy and access control: issued admin keys, the suppression list, drop counters, consent
-- history, the privacy audit log, and per-identifier activity for retention.

-- Issued admin keys. Only the SHA-256 of a key is stored; revoking keeps the row (and label) for
-- the audit log. The root key is a deployment secret (ADMIN_KEY) and never stored.
CREATE TABLE admin_keys (
  label      TEXT    NOT NULL PRIMARY KEY,
  key_hash   TEXT    NOT NULL UNIQUE,
  scopes     TEXT    NOT NULL,              -- JSON array: profiles:read, privacy:write, config:write
  created_at INTEGER NOT NULL,
  created_by TEXT    NOT NULL,              -- label of the key that issued it
  revoked_at INTEGER
) WITHOUT ROWID;

-- Identifiers whose events are dropped. `key` is seam-core's suppression key (a domain-separated
-- SHA-256 of the identifier), so the list holds no identifier in clear.
CREATE TABLE suppressions (
  key        TEXT    NOT NULL PRIMARY KEY,
  id_class   TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  request_id TEXT    NOT NULL
) WITHOUT ROWID;

-- Rejected events per source, reason (result code) and UTC day.
CREATE TABLE drop_counts (
  source_id TEXT    NOT NULL,
  reason    TEXT    NOT NULL,
  day       TEXT    NOT NULL,  -- YYYY-MM-DD
  count     INTEGER NOT NULL,
  PRIMARY KEY (source_id, reason, day)
) WITHOUT ROWID;

-- Consent states per identifier, one row per change, with the event that carried it.
CREATE TABLE consent_history (
  identifier  TEXT    NOT NULL,
  timestamp   INTEGER NOT NULL,
  message_key TEXT    NOT NULL,
  source_id   TEXT    NOT NULL,
  state       TEXT    NOT NULL,  -- JSON: gcm, categoryPreferences, tcString, gpc
  PRIMARY KEY (identifier, timestamp, message_key)
) WITHOUT ROWID;

-- Who did what, when: every privacy action and key change. The subject is a suppression key,
-- never an identifier in clear, so the log survives the deletions it records.
CREATE TABLE privacy_audit (
  request_id TEXT    NOT NULL PRIMARY KEY,
  action     TEXT    NOT NULL,
  actor      TEXT    NOT NULL,
  subject    TEXT,
  detail     TEXT    NOT NULL,
  at         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX privacy_audit_at ON privacy_audit (at);

-- Last activity per identifier (refreshed at most hourly) for the retention of anonymous profiles.
ALTER TABLE identities ADD COLUMN last_seen INTEGER;
CREATE INDEX identities_activity ON identities (coalesce(last_seen, updated_at));
