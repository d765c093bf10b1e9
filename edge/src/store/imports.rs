//! CSV imports' progress and refused rows (migration 0021).

use seam_core::collect::import::RowError;
use seam_core::plan::{multi_row, Param, Statement};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::D1Database;

use crate::store::d1;

/// Refused rows kept per import (the first ones).
pub const MAX_ERRORS: i64 = 1000;

/// An import as stored.
#[allow(missing_docs)] // the columns of `imports`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Import {
    pub id: String,
    pub source_id: String,
    pub mapping: String,
    pub header: String,
    pub status: String,
    pub bytes: i64,
    pub offset: i64,
    pub rows: i64,
    pub accepted: i64,
    pub duplicates: i64,
    pub rejected: i64,
    pub attempts: i64,
    pub actor: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Records a new import (already validated) and an audit entry, in one batch.
pub async fn create(db: &D1Database, import: &Import, audit: Statement) -> worker::Result<()> {
    let insert = Statement {
        sql: "INSERT INTO imports (id, source_id, mapping, header, status, bytes, offset, actor, \
              created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
            .into(),
        params: vec![
            Param::Text(import.id.clone()),
            Param::Text(import.source_id.clone()),
            Param::Text(import.mapping.clone()),
            Param::Text(import.header.clone()),
            Param::Text(import.status.clone()),
            Param::Int(import.bytes),
            Param::Int(import.offset),
            Param::Text(import.actor.clone()),
            Param::Int(import.created_at),
        ],
    };
    d1::execute(db, &[insert, audit]).await.map(|_| ())
}

/// An import by ID.
pub async fn get(db: &D1Database, id: &str) -> worker::Result<Option<Import>> {
    db.prepare("SELECT * FROM imports WHERE id = ?")
        .bind(&[id.into()])?
        .first::<Import>(None)
        .await
}

/// What one step did.
#[derive(Debug, Default)]
pub struct Step {
    /// Where the next step starts.
    pub offset: i64,
    /// Records read.
    pub rows: i64,
    /// Stored now.
    pub accepted: i64,
    /// Stored before (a re-upload).
    pub duplicates: i64,
    /// Refused: `errors` says why (the first [`MAX_ERRORS`]).
    pub rejected: i64,
    /// The file is read to its end.
    pub done: bool,
}

/// Moves an import on by `step` from `from` (only if no other step moved it meanwhile), with
/// its refused rows; false when another step had.
pub async fn advance(
    db: &D1Database,
    id: &str,
    from: i64,
    step: &Step,
    errors: &[RowError],
    now_ms: i64,
) -> worker::Result<bool> {
    let mut plan = vec![Statement {
        sql: "UPDATE imports SET offset = ?3, rows = rows + ?4, accepted = accepted + ?5, \
              duplicates = duplicates + ?6, rejected = rejected + ?7, attempts = 0, \
              status = CASE WHEN ?8 THEN 'done' ELSE status END, updated_at = ?9 \
              WHERE id = ?1 AND offset = ?2 AND status = 'running' RETURNING id"
            .into(),
        params: vec![
            Param::Text(id.into()),
            Param::Int(from),
            Param::Int(step.offset),
            Param::Int(step.rows),
            Param::Int(step.accepted),
            Param::Int(step.duplicates),
            Param::Int(step.rejected),
            Param::Int(i64::from(step.done)),
            Param::Int(now_ms),
        ],
    }];
    let rows: Vec<Vec<Param>> = errors
        .iter()
        .map(|e| {
            vec![
                Param::Text(id.into()),
                Param::Int(e.row as i64),
                Param::Text(e.column.clone()),
                Param::Text(e.code.clone()),
                Param::Text(e.message.chars().take(300).collect()),
            ]
        })
        .collect();
    // Kept only while the import has fewer than MAX_ERRORS: a file of bad rows stays small here.
    plan.extend(multi_row(
        "INSERT INTO import_errors (import_id, row, col, code, message) SELECT * FROM (VALUES ",
        &format!(
            ") WHERE (SELECT count(*) FROM import_errors WHERE import_id = ?) < {MAX_ERRORS} \
             ON CONFLICT DO NOTHING"
        ),
        rows,
        &[Param::Text(id.into())],
    ));
    let results = d1::execute(db, &plan).await?;
    Ok(results
        .first()
        .and_then(|r| r.results::<Value>().ok())
        .is_some_and(|rows| !rows.is_empty()))
}

/// Tries before a step that keeps failing fails its import.
pub const MAX_ATTEMPTS: i64 = 5;

/// Counts a failed try of an import's step at `offset`; after [`MAX_ATTEMPTS`] the import
/// fails, with the reason as an error of row 0. Returns whether it failed.
pub async fn failed_attempt(
    db: &D1Database,
    id: &str,
    offset: i64,
    code: &str,
    now_ms: i64,
) -> worker::Result<bool> {
    let results = d1::execute(
        db,
        &[
            Statement {
                sql: "UPDATE imports SET attempts = attempts + 1, updated_at = ?3, \
                      status = CASE WHEN attempts + 1 >= ?4 THEN 'failed' ELSE status END \
                      WHERE id = ?1 AND offset = ?2 AND status = 'running' RETURNING status"
                    .into(),
                params: vec![
                    Param::Text(id.into()),
                    Param::Int(offset),
                    Param::Int(now_ms),
                    Param::Int(MAX_ATTEMPTS),
                ],
            },
            Statement {
                sql: "INSERT INTO import_errors (import_id, row, col, code, message) \
                      SELECT ?1, 0, '-', ?2, 'the import stopped at byte ' || ?3 \
                      WHERE (SELECT status FROM imports WHERE id = ?1) = 'failed' \
                      ON CONFLICT DO NOTHING"
                    .into(),
                params: vec![
                    Param::Text(id.into()),
                    Param::Text(code.into()),
                    Param::Int(offset),
                ],
            },
        ],
    )
    .await?;
    #[derive(Deserialize)]
    struct Row {
        status: String,
    }
    Ok(results
        .first()
        .and_then(|r| r.results::<Row>().ok())
        .and_then(|rows| rows.into_iter().next())
        .is_some_and(|r| r.status == "failed"))
}

/// Imports finished (done or failed) before `before_ms`, with their errors, are forgotten;
/// returns their IDs (their files go too).
pub async fn prune(db: &D1Database, before_ms: i64) -> worker::Result<Vec<String>> {
    let ids: Vec<String> = d1::rows::<IdRow>(
        db,
        &Statement {
            sql: "SELECT id FROM imports WHERE status <> 'running' AND updated_at < ?1 LIMIT 100"
                .into(),
            params: vec![Param::Int(before_ms)],
        },
    )
    .await?
    .into_iter()
    .map(|r| r.id)
    .collect();
    let list = Param::Text(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()));
    d1::execute(
        db,
        &[
            Statement {
                sql:
                    "DELETE FROM import_errors WHERE import_id IN (SELECT value FROM json_each(?1))"
                        .into(),
                params: vec![list.clone()],
            },
            Statement {
                sql: "DELETE FROM imports WHERE id IN (SELECT value FROM json_each(?1))".into(),
                params: vec![list],
            },
        ],
    )
    .await?;
    Ok(ids)
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

/// The first refused rows of an import, by row.
pub async fn errors(db: &D1Database, id: &str, limit: i64) -> worker::Result<Vec<Value>> {
    d1::rows(
        db,
        &Statement {
            sql: "SELECT row, col AS column, code, message FROM import_errors \
                  WHERE import_id = ?1 ORDER BY row LIMIT ?2"
                .into(),
            params: vec![Param::Text(id.into()), Param::Int(limit)],
        },
    )
    .await
}

/// Running imports no step has moved since `before_ms` (a step lost): `id, offset`.
pub async fn stalled(db: &D1Database, before_ms: i64) -> worker::Result<Vec<(String, i64)>> {
    #[derive(Deserialize)]
    struct Row {
        id: String,
        offset: i64,
    }
    let rows: Vec<Row> = d1::rows(
        db,
        &Statement {
            sql: "SELECT id, offset FROM imports WHERE status = 'running' AND updated_at < ?1 \
                  LIMIT 20"
                .into(),
            params: vec![Param::Int(before_ms)],
        },
    )
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.offset)).collect())
}
