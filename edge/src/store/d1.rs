//! Runs [`Statement`] plans on D1. A plan goes in one `batch()`, which D1 runs as a transaction.

use std::collections::HashSet;

use seam_core::plan::{Param, Statement};
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result};

fn bind(param: &Param) -> JsValue {
    match param {
        Param::Text(s) => JsValue::from_str(s),
        // Epoch milliseconds, counters and link `seq` sums (`graph_plan::seq_floor`) stay
        // below 2^53, so f64 is exact.
        Param::Int(n) => JsValue::from_f64(*n as f64),
        Param::Null => JsValue::NULL,
        // D1 stores an ArrayBuffer as a BLOB.
        Param::Blob(b) => worker::js_sys::Uint8Array::from(b.as_slice())
            .buffer()
            .into(),
    }
}

fn prepare(db: &D1Database, statement: &Statement) -> worker::Result<D1PreparedStatement> {
    let params: Vec<JsValue> = statement.params.iter().map(bind).collect();
    db.prepare(&statement.sql).bind(&params)
}

/// The pauses before each further try of [`Patient::retry`]: about a second in all.
const PATIENT_PAUSES_MS: [u64; 3] = [50, 200, 800];

/// D1 for work after the response, which nothing would redo if it failed: D1 can be busy or
/// unreachable for a moment, and a failed read or batch changed nothing (a batch is one
/// transaction), so [`retry`](Self::retry) tries again. `until_ms` bounds the retrying of a
/// whole run (many profiles, one after another): the platform cuts after-response work off
/// at 30 s, and a cut run would leave its profiles marked running.
#[derive(Clone, Copy)]
pub struct Patient<'a> {
    /// The database.
    pub db: &'a D1Database,
    /// No further try starts after this time (epoch ms).
    pub until_ms: i64,
}

impl Patient<'_> {
    /// Runs `work` until it succeeds, trying again after each of [`PATIENT_PAUSES_MS`] while
    /// the pause ends before `until_ms`.
    pub async fn retry<T, E, F, Fut>(self, mut work: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        for pause in PATIENT_PAUSES_MS {
            match work().await {
                Ok(done) => return Ok(done),
                Err(e) if crate::platform::now_ms() + pause as i64 > self.until_ms => {
                    return Err(e)
                }
                Err(_) => crate::platform::sleep(pause).await,
            }
        }
        work().await
    }
}

/// Runs one read statement and returns its rows.
pub async fn rows<T: serde::de::DeserializeOwned>(
    db: &D1Database,
    statement: &Statement,
) -> worker::Result<Vec<T>> {
    prepare(db, statement)?.all().await?.results::<T>()
}

/// Executes `plan` as one transaction and returns each statement's result.
pub async fn execute(db: &D1Database, plan: &[Statement]) -> worker::Result<Vec<D1Result>> {
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    let statements = plan
        .iter()
        .map(|s| prepare(db, s))
        .collect::<worker::Result<Vec<_>>>()?;
    db.batch(statements).await
}

/// The rows of the `i`th statement of a batch's results, typed; an error if the batch
/// returned fewer results.
pub fn rows_of<T: serde::de::DeserializeOwned>(
    results: &[D1Result],
    i: usize,
) -> worker::Result<Vec<T>> {
    results
        .get(i)
        .ok_or_else(|| worker::Error::RustError("a read batch lost a result".into()))?
        .results()
}

/// The rows of the `i`th result of a batch (none when the batch had fewer results).
pub fn rows_at(results: &[D1Result], i: usize) -> worker::Result<Vec<serde_json::Value>> {
    Ok(results
        .get(i)
        .map(|r| r.results::<serde_json::Value>())
        .transpose()?
        .unwrap_or_default())
}

#[derive(Deserialize)]
struct Returned {
    message_id: String,
}

/// The `messageId`s an event-insert statement's `RETURNING` rows name (the events newly stored).
pub fn inserted_ids(results: &[D1Result]) -> worker::Result<HashSet<String>> {
    let mut inserted = HashSet::new();
    for result in results {
        inserted.extend(
            result
                .results::<Returned>()?
                .into_iter()
                .map(|r| r.message_id),
        );
    }
    Ok(inserted)
}
