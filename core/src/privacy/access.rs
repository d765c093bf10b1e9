//! Admin access: labelled, scoped, revocable keys, stored only as SHA-256 hashes.
//!
//! Write keys are public (they ship in every page) and can only send events. Admin routes need
//! `Authorization: Bearer <admin key>` with the route's [`Scope`]. Two kinds of admin key exist:
//! - the *root* key, a deployment secret (`wrangler secret put ADMIN_KEY`), labelled `root`, with
//!   every scope; it bootstraps the others and cannot be revoked except by rotating the secret;
//! - *issued* keys, created through the admin API with a label and scopes. Only their hash is
//!   stored, so a leaked database holds no usable key; revoking one marks it, keeping the label
//!   for the audit log.
//!
//! A presented key is hashed and the hash looked up; hashes are compared in constant time.

use serde::Serialize;
use serde_json::Value;

use crate::collect::auth::constant_time_eq;
use crate::identity::sha256_hex;

/// Label of the deployment-secret key.
pub const ROOT_LABEL: &str = "root";
/// Issued keys start with this, so leaked keys are easy to recognise (secret scanners, logs).
pub const KEY_PREFIX: &str = "seam_admin_";
/// A root secret shorter than this disables admin access rather than accepting a guessable key.
pub const MIN_ROOT_KEY_LEN: usize = 16;

/// What an admin key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Scope {
    /// Read profiles (`GET /v1/profiles/...`).
    #[serde(rename = "profiles:read")]
    ProfilesRead,
    /// Data-subject requests: delete, suppress, export (`/v1/privacy/...`).
    #[serde(rename = "privacy:write")]
    PrivacyWrite,
    /// Manage admin keys and configuration (`/v1/admin/...`).
    #[serde(rename = "config:write")]
    ConfigWrite,
    /// Bulk export of events and profiles (`/v1/admin/export/...`): a warehouse loader's key.
    #[serde(rename = "export:read")]
    ExportRead,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Scope::ProfilesRead,
        Scope::PrivacyWrite,
        Scope::ConfigWrite,
        Scope::ExportRead,
    ];

    /// The scope's name in keys and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ProfilesRead => "profiles:read",
            Scope::PrivacyWrite => "privacy:write",
            Scope::ConfigWrite => "config:write",
            Scope::ExportRead => "export:read",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Why a request may not use an admin route. Each variant has a stable [`AccessError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No `Authorization: Bearer` header.
    #[error("an admin key is required (Authorization: Bearer <key>)")]
    MissingAdminKey,
    /// A key that matches no admin key (or admin access is not configured).
    #[error("the admin key is not valid")]
    InvalidAdminKey,
    /// A revoked key.
    #[error("the admin key has been revoked")]
    RevokedKey,
    /// A write key (HTTP Basic) on an admin route.
    #[error("write keys can only send events")]
    WriteKeyForbidden,
    /// A valid key without the route's scope.
    #[error("the admin key lacks the scope this route needs")]
    MissingScope(Scope),
    /// A key request whose label is unusable.
    #[error("label must be 1-64 characters of a-z, 0-9, '-', '_' or '.', and not 'root'")]
    InvalidLabel,
    /// A key request whose scopes are unusable.
    #[error("scopes must be a non-empty list of profiles:read, privacy:write, config:write, export:read")]
    InvalidScopes,
    /// A console session that ended (logged out, expired, or its key revoked).
    #[error("the console session has ended: sign in again")]
    SessionEnded,
    /// A console request that would change something without the session's CSRF token, or
    /// from another origin.
    #[error("this request must come from the console page itself")]
    CrossSiteRequest,
}

impl AccessError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAdminKey => "missing_admin_key",
            Self::InvalidAdminKey => "invalid_admin_key",
            Self::RevokedKey => "revoked_admin_key",
            Self::WriteKeyForbidden => "write_key_forbidden",
            Self::MissingScope(_) => "insufficient_scope",
            Self::InvalidLabel => "invalid_label",
            Self::InvalidScopes => "invalid_scopes",
            Self::SessionEnded => "session_ended",
            Self::CrossSiteRequest => "cross_site_request",
        }
    }
}

/// The bearer token of an `Authorization` header. Basic credentials are write keys and are
/// refused outright, so a write key can never be mistaken for an admin key.
pub fn bearer(header: Option<&str>) -> Result<&str, AccessError> {
    let header = header.map(str::trim).ok_or(AccessError::MissingAdminKey)?;
    let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Err(AccessError::WriteKeyForbidden);
    }
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AccessError::MissingAdminKey);
    }
    Ok(token)
}

/// The stored form of a key: hex SHA-256.
pub fn key_hash(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// A new issued key from 24 random bytes (192 bits), as `seam_admin_<48 hex digits>`.
pub fn issue_key(random: [u8; 24]) -> String {
    let mut key = String::with_capacity(KEY_PREFIX.len() + 48);
    key.push_str(KEY_PREFIX);
    for b in random {
        key.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    key
}

/// An issued key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Who holds it (shown in the audit log).
    pub label: String,
    /// [`key_hash`] of the key.
    pub hash: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// Who is acting: the key's label, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Label of the key used.
    pub label: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
}

impl Grant {
    /// Refuses an action needing `scope` this grant lacks.
    pub fn require(&self, scope: Scope) -> Result<(), AccessError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AccessError::MissingScope(scope))
        }
    }

    /// Whether this key may issue a key with `requested` scopes: only scopes it holds itself, so
    /// a key cannot mint one more powerful than it is.
    pub fn may_issue(&self, requested: &[Scope]) -> Result<(), AccessError> {
        match requested.iter().find(|s| !self.scopes.contains(s)) {
            Some(missing) => Err(AccessError::MissingScope(*missing)),
            None => Ok(()),
        }
    }
}

/// Decides whether `presented` may act with scope `needed`. `root` is the deployment secret (if
/// set); `stored` is the issued key whose hash equals the presented key's, if the store has one.
pub fn authorize(
    presented: &str,
    root: Option<&str>,
    stored: Option<&StoredKey>,
    needed: Scope,
) -> Result<Grant, AccessError> {
    let grant = identify(presented, root, stored)?;
    grant.require(needed)?;
    Ok(grant)
}

/// Who `presented` is, whatever it may do: the root key, or a live issued key.
pub fn identify(
    presented: &str,
    root: Option<&str>,
    stored: Option<&StoredKey>,
) -> Result<Grant, AccessError> {
    let hash = key_hash(presented);
    if let Some(root) = root.filter(|r| r.len() >= MIN_ROOT_KEY_LEN) {
        if constant_time_eq(key_hash(root).as_bytes(), hash.as_bytes()) {
            return Ok(Grant {
                label: ROOT_LABEL.to_owned(),
                scopes: Scope::ALL.to_vec(),
            });
        }
    }
    let key = stored
        .filter(|k| constant_time_eq(k.hash.as_bytes(), hash.as_bytes()))
        .ok_or(AccessError::InvalidAdminKey)?;
    if key.revoked {
        return Err(AccessError::RevokedKey);
    }
    Ok(Grant {
        label: key.label.clone(),
        scopes: key.scopes.clone(),
    })
}

/// A validated request to issue a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    /// Unique label.
    pub label: String,
    /// Scopes, sorted and deduplicated.
    pub scopes: Vec<Scope>,
}

/// Validates `{"label": "...", "scopes": ["profiles:read", ...]}`.
pub fn parse_key_request(body: &Value) -> Result<KeyRequest, AccessError> {
    let label = body
        .get("label")
        .and_then(Value::as_str)
        .filter(|l| valid_label(l))
        .ok_or(AccessError::InvalidLabel)?;
    let mut scopes = body
        .get("scopes")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .ok_or(AccessError::InvalidScopes)?
        .iter()
        .map(|s| s.as_str().and_then(Scope::parse))
        .collect::<Option<Vec<_>>>()
        .ok_or(AccessError::InvalidScopes)?;
    scopes.sort();
    scopes.dedup();
    Ok(KeyRequest {
        label: label.to_owned(),
        scopes,
    })
}

/// Whether `label` is a usable key label.
pub fn valid_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label != ROOT_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Scopes as stored: a JSON array of names.
pub fn scopes_json(scopes: &[Scope]) -> String {
    serde_json::to_string(&scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

/// Reads stored scopes; unknown names (from a newer version) are ignored, never granted.
pub fn parse_scopes(json: &str) -> Vec<Scope> {
    serde_json::from_str::<Vec<String>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Scope::parse(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOT: &str = "a-long-enough-root-secret";

    fn issued(scopes: &[Scope], revoked: bool) -> (String, StoredKey) {
        let key = issue_key([7; 24]);
        let stored = StoredKey {
            label: "analyst".into(),
            hash: key_hash(&key),
            scopes: scopes.to_vec(),
            revoked,
        };
        (key, stored)
    }

    #[test]
    fn a_key_issues_only_scopes_it_holds() {
        let grant = |scopes: &[Scope]| Grant {
            label: "k".into(),
            scopes: scopes.to_vec(),
        };
        let config_only = grant(&[Scope::ConfigWrite]);
        assert_eq!(config_only.may_issue(&[Scope::ConfigWrite]), Ok(()));
        assert_eq!(
            config_only.may_issue(&[Scope::ConfigWrite, Scope::PrivacyWrite]),
            Err(AccessError::MissingScope(Scope::PrivacyWrite))
        );
        assert_eq!(grant(&Scope::ALL).may_issue(&Scope::ALL), Ok(()));
        let root = authorize(
            "root-secret-0123456789",
            Some("root-secret-0123456789"),
            None,
            Scope::ProfilesRead,
        );
        assert_eq!(root.map(|g| g.scopes), Ok(Scope::ALL.to_vec()));
    }

    #[test]
    fn root_key_has_every_scope() {
        for scope in Scope::ALL {
            assert_eq!(
                authorize(ROOT, Some(ROOT), None, scope).map(|g| g.label),
                Ok("root".to_owned())
            );
        }
    }

    #[test]
    fn short_root_secret_disables_root_access() {
        assert_eq!(
            authorize("short", Some("short"), None, Scope::ProfilesRead),
            Err(AccessError::InvalidAdminKey)
        );
    }

    #[test]
    fn issued_key_acts_only_within_its_scopes() {
        let (key, stored) = issued(&[Scope::ProfilesRead], false);
        assert_eq!(
            authorize(&key, Some(ROOT), Some(&stored), Scope::ProfilesRead).map(|g| g.label),
            Ok("analyst".to_owned())
        );
        assert_eq!(
            authorize(&key, Some(ROOT), Some(&stored), Scope::PrivacyWrite),
            Err(AccessError::MissingScope(Scope::PrivacyWrite))
        );
    }

    #[test]
    fn revoked_key_is_refused_with_its_own_code() {
        let (key, stored) = issued(&Scope::ALL, true);
        let err = authorize(&key, None, Some(&stored), Scope::ProfilesRead).unwrap_err();
        assert_eq!(err.code(), "revoked_admin_key");
    }

    #[test]
    fn a_stored_key_with_another_hash_does_not_admit() {
        let (_, stored) = issued(&Scope::ALL, false);
        assert_eq!(
            authorize("seam_admin_guess", None, Some(&stored), Scope::ProfilesRead),
            Err(AccessError::InvalidAdminKey)
        );
    }

    #[test]
    fn bearer_refuses_basic_and_missing_credentials() {
        assert_eq!(bearer(Some("Bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer(None), Err(AccessError::MissingAdminKey));
        assert_eq!(bearer(Some("Bearer ")), Err(AccessError::MissingAdminKey));
        assert_eq!(bearer(Some("Token abc")), Err(AccessError::MissingAdminKey));
        assert_eq!(
            bearer(Some("Basic c2VhbTo=")),
            Err(AccessError::WriteKeyForbidden)
        );
    }

    #[test]
    fn issued_keys_are_prefixed_hex_and_hash_stably() {
        let key = issue_key([0xab; 24]);
        assert_eq!(key.len(), KEY_PREFIX.len() + 48);
        assert!(key.starts_with("seam_admin_abab"));
        assert_eq!(key_hash(&key), key_hash(&key.clone()));
        assert_ne!(key_hash(&key), key_hash(&issue_key([0xac; 24])));
        assert_eq!(key_hash(&key).len(), 64);
    }

    #[test]
    fn key_requests_are_validated() {
        let ok = parse_key_request(
            &json!({"label": "support-desk", "scopes": ["privacy:write", "profiles:read", "privacy:write"]}),
        );
        assert_eq!(
            ok.map(|r| r.scopes),
            Ok(vec![Scope::ProfilesRead, Scope::PrivacyWrite])
        );
        for bad in [
            json!({"scopes": ["profiles:read"]}),
            json!({"label": "root", "scopes": ["profiles:read"]}),
            json!({"label": "Has Space", "scopes": ["profiles:read"]}),
            json!({"label": "x".repeat(65), "scopes": ["profiles:read"]}),
        ] {
            assert_eq!(parse_key_request(&bad), Err(AccessError::InvalidLabel));
        }
        for bad in [
            json!({"label": "a"}),
            json!({"label": "a", "scopes": []}),
            json!({"label": "a", "scopes": ["admin:all"]}),
            json!({"label": "a", "scopes": "profiles:read"}),
        ] {
            assert_eq!(parse_key_request(&bad), Err(AccessError::InvalidScopes));
        }
    }

    #[test]
    fn stored_scopes_round_trip_and_ignore_unknown_names() {
        assert_eq!(parse_scopes(&scopes_json(&Scope::ALL)), Scope::ALL.to_vec());
        assert_eq!(
            parse_scopes(r#"["profiles:read","future:scope"]"#),
            vec![Scope::ProfilesRead]
        );
        assert!(parse_scopes("not json").is_empty());
    }
}

/// The console's session cookie: an opaque token (only its hash is stored) that stands for the
/// key it was opened with, so the key itself never travels again.
pub const SESSION_COOKIE: &str = "seam_console";
/// How long a console session lasts.
pub const SESSION_MS: i64 = 8 * 60 * 60 * 1000;
/// The header a console request that changes anything carries: the session's CSRF token.
pub const CSRF_HEADER: &str = "X-Seam-CSRF";

/// Hex of random bytes (session tokens, CSRF tokens).
pub fn token(random: [u8; 32]) -> String {
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// A console session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who opened it, with what scopes.
    pub grant: Grant,
    /// The token a changing request must echo in [`CSRF_HEADER`].
    pub csrf: String,
    /// When it ends (epoch ms).
    pub expires_ms: i64,
}

/// The statement storing a session opened at `now_ms` with `grant`, under `token`'s hash.
pub fn open_session(token: &str, grant: &Grant, csrf: &str, now_ms: i64) -> crate::plan::Statement {
    use crate::plan::{Param, Statement};
    Statement {
        sql: "INSERT INTO console_sessions (token_hash, label, scopes, csrf, created_at, expires_at) \
              VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            .into(),
        params: vec![
            Param::Text(key_hash(token)),
            Param::Text(grant.label.clone()),
            Param::Text(scopes_json(&grant.scopes)),
            Param::Text(csrf.into()),
            Param::Int(now_ms),
            Param::Int(now_ms + SESSION_MS),
        ],
    }
}

/// The statement reading the live session of `token` at `now_ms`: `label, scopes, csrf,
/// expires_at`, none when it expired or its key was revoked since.
pub fn find_session(token: &str, now_ms: i64) -> crate::plan::Statement {
    use crate::plan::{Param, Statement};
    Statement {
        sql: "SELECT s.label, s.scopes, s.csrf, s.expires_at FROM console_sessions s \
              LEFT JOIN admin_keys k ON k.label = s.label \
              WHERE s.token_hash = ?1 AND s.expires_at > ?2 \
              AND (s.label = ?3 OR (k.label IS NOT NULL AND k.revoked_at IS NULL))"
            .into(),
        params: vec![
            Param::Text(key_hash(token)),
            Param::Int(now_ms),
            Param::Text(ROOT_LABEL.into()),
        ],
    }
}

/// The statement ending `token`'s session (and any that expired before `now_ms`).
pub fn close_session(token: &str, now_ms: i64) -> crate::plan::Statement {
    use crate::plan::{Param, Statement};
    Statement {
        sql: "DELETE FROM console_sessions WHERE token_hash = ?1 OR expires_at <= ?2".into(),
        params: vec![Param::Text(key_hash(token)), Param::Int(now_ms)],
    }
}
