//! Issued admin keys and console sessions in D1 (hashes only).

use seam_core::privacy::access::{
    self, parse_scopes, scopes_json, Grant, KeyRequest, Session, StoredKey,
};
use serde::Deserialize;
use serde_json::{json, Value};
use worker::D1Database;

#[derive(Deserialize)]
struct KeyRow {
    label: String,
    key_hash: String,
    scopes: String,
    created_at: i64,
    created_by: String,
    revoked_at: Option<i64>,
}

impl KeyRow {
    fn stored(&self) -> StoredKey {
        StoredKey {
            label: self.label.clone(),
            hash: self.key_hash.clone(),
            scopes: parse_scopes(&self.scopes),
            revoked: self.revoked_at.is_some(),
        }
    }
}

const COLUMNS: &str = "label, key_hash, scopes, created_at, created_by, revoked_at";

/// The issued key with this hash, if any.
pub async fn by_hash(db: &D1Database, hash: &str) -> worker::Result<Option<StoredKey>> {
    Ok(db
        .prepare(format!(
            "SELECT {COLUMNS} FROM admin_keys WHERE key_hash = ?"
        ))
        .bind(&[hash.into()])?
        .first::<KeyRow>(None)
        .await?
        .map(|r| r.stored()))
}

/// Stores a new key's hash; `false` when the label is taken.
pub async fn insert(
    db: &D1Database,
    request: &KeyRequest,
    hash: &str,
    created_by: &str,
    now_ms: i64,
) -> worker::Result<bool> {
    let result = db
        .prepare(
            "INSERT INTO admin_keys (label, key_hash, scopes, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&[
            request.label.as_str().into(),
            hash.into(),
            scopes_json(&request.scopes).into(),
            (now_ms as f64).into(),
            created_by.into(),
        ])?
        .run()
        .await?;
    Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
}

/// Marks a key revoked; `false` when no such label exists. Revoking twice keeps the first time.
pub async fn revoke(db: &D1Database, label: &str, now_ms: i64) -> worker::Result<bool> {
    let row = db
        .prepare("UPDATE admin_keys SET revoked_at = coalesce(revoked_at, ?) WHERE label = ? RETURNING label")
        .bind(&[(now_ms as f64).into(), label.into()])?
        .first::<Value>(None)
        .await?;
    Ok(row.is_some())
}

/// Every issued key, without hashes.
pub async fn list(db: &D1Database) -> worker::Result<Vec<Value>> {
    let rows = db
        .prepare(format!(
            "SELECT {COLUMNS} FROM admin_keys ORDER BY created_at, label"
        ))
        .all()
        .await?
        .results::<KeyRow>()?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "label": r.label,
                "scopes": parse_scopes(&r.scopes).iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "createdAt": r.created_at,
                "createdBy": r.created_by,
                "revokedAt": r.revoked_at,
            })
        })
        .collect())
}

#[derive(Deserialize)]
struct SessionRow {
    label: String,
    scopes: String,
    csrf: String,
    expires_at: i64,
}

/// The live console session of `token` at `now_ms` (none: ended, expired, or its key revoked).
pub async fn session(db: &D1Database, token: &str, now_ms: i64) -> worker::Result<Option<Session>> {
    let rows: Vec<SessionRow> =
        crate::store::d1::rows(db, &access::find_session(token, now_ms)).await?;
    Ok(rows.into_iter().next().map(|r| Session {
        grant: Grant {
            label: r.label,
            scopes: parse_scopes(&r.scopes),
        },
        csrf: r.csrf,
        expires_ms: r.expires_at,
    }))
}
