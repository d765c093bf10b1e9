//! The audit log (privacy actions, admin changes, retention runs): written by core's
//! `privacy::audit` statements in the same batch as their effect, read here.

use serde_json::Value;
use worker::D1Database;

use crate::store::profiles::parse_json_column;

/// The newest `limit` entries, newest first, with their `detail` parsed.
pub async fn recent(db: &D1Database, limit: u32) -> worker::Result<Vec<Value>> {
    Ok(db
        .prepare(
            "SELECT request_id AS requestId, action, actor, subject, detail, at FROM privacy_audit \
             ORDER BY at DESC, request_id DESC LIMIT ?",
        )
        .bind(&[f64::from(limit).into()])?
        .all()
        .await?
        .results::<Value>()?
        .into_iter()
        .map(|row| parse_json_column(row, "detail"))
        .collect())
}
