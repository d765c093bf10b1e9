-- Console sessions (core::privacy::access): signing in with an admin key at /console opens a
-- session whose token lives in an HttpOnly cookie; only its hash is stored. A session has the
-- scopes of its key, ends at `expires_at`, and ends early when its key is revoked.
CREATE TABLE console_sessions (
  token_hash TEXT    NOT NULL PRIMARY KEY,
  label      TEXT    NOT NULL, -- the key's label (`root` for the deployment's key)
  scopes     TEXT    NOT NULL, -- JSON array, as the key's
  csrf       TEXT    NOT NULL, -- echoed in X-Seam-CSRF by every request that changes anything
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_by_label ON console_sessions (label);
