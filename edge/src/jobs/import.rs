//! CSV imports, one step per queue message: read a chunk of the file from R2 at the import's
//! offset, turn its rows into events (`seam_core::collect::import`), accept them as ingestion
//! does (`accept`), then move the offset and the counts, and queue the next step. A step that
//! runs twice stores nothing twice: each row's message ID comes from its key, and a step only
//! moves an import still at the offset it read.

use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::import::{self, Mapping, RowError};
use seam_core::collect::ingest::{decode, Status};
use seam_core::format::id;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{Bucket, Context, Env, MessageBatch, MessageBuilder, MessageExt, Range};

use crate::error::ApiError;
use crate::store::imports;
use crate::{accept, platform, store};

/// The queue's name in `wrangler.toml`: the queue handler dispatches on it (rename both).
pub const QUEUE_NAME: &str = "seam-imports";
const QUEUE: &str = "IMPORT_QUEUE";
/// The bucket the files lie in, under [`PREFIX`].
pub const BUCKET: &str = "ARCHIVE";
/// Where uploaded files lie.
pub const PREFIX: &str = "imports/";
/// Bytes of the file one step reads at most (a row may be this long).
const CHUNK_BYTES: u64 = 256 * 1024;
/// Rows one step imports at most: each may refresh a profile after the step, and an invocation
/// makes at most 1,000 D1 queries.
const ROWS_PER_STEP: usize = 100;
/// Bytes of events per `accept` call (a client's batch takes 500 KB).
const BATCH_BYTES: usize = 400 * 1024;
/// A running import no step has moved for this long has lost its message.
const STALLED_MS: i64 = 2 * 60 * 1000;

/// One step of an import: read from `offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// The import.
    pub import: String,
    /// Where to read.
    pub offset: i64,
}

/// The key of an import's file.
pub fn file_key(id: &str) -> String {
    format!("{PREFIX}{id}.csv")
}

/// Bytes `offset..offset + length` of an import's file; `None` when the file is gone.
pub async fn read_file(
    bucket: &Bucket,
    id: &str,
    offset: u64,
    length: u64,
) -> worker::Result<Option<Vec<u8>>> {
    let Some(object) = bucket
        .get(file_key(id))
        .range(Range::OffsetWithLength { offset, length })
        .execute()
        .await?
    else {
        return Ok(None);
    };
    match object.body() {
        Some(body) => body.bytes().await.map(Some),
        None => Ok(Some(Vec::new())),
    }
}

/// Queues a step.
pub async fn send(env: &Env, step: Step) -> worker::Result<()> {
    env.queue(QUEUE)?
        .send_batch(vec![MessageBuilder::new(step).build()])
        .await
}

/// The consumer: runs each message's step. A failure sends the message back; the step runs
/// again from the same offset.
pub async fn consume(batch: MessageBatch<Value>, env: &Env, ctx: &Context) -> worker::Result<()> {
    let now_ms = platform::now_ms();
    store::config::refresh(env, now_ms).await;
    store::destinations::refresh(env, now_ms).await;
    for message in batch.messages()? {
        let Ok(step) = serde_json::from_value::<Step>(message.body().clone()) else {
            worker::console_error!("import queue: a message that is not a step");
            continue;
        };
        if let Err(e) = run(env, ctx, &step).await {
            worker::console_error!("import {}: {} ({e})", step.import, e.code());
            // A step that keeps failing (its source removed, its file gone) fails the import
            // instead of looping.
            let failed = match env.d1("DB") {
                Ok(db) => {
                    imports::failed_attempt(&db, &step.import, step.offset, e.code(), now_ms).await
                }
                Err(e) => Err(e),
            };
            if !matches!(failed, Ok(true)) {
                message.retry();
            }
        }
    }
    Ok(())
}

async fn run(env: &Env, ctx: &Context, step: &Step) -> Result<(), ApiError> {
    let db = env.d1("DB")?;
    let Some(job) = imports::get(&db, &step.import).await? else {
        return Ok(());
    };
    if job.status != "running" || job.offset != step.offset {
        // Done, or another step moved it: this message is a repeat.
        return Ok(());
    }
    let now_ms = platform::now_ms();
    let length = CHUNK_BYTES.min(job.bytes.saturating_sub(job.offset).max(0) as u64);
    let bytes = if length == 0 {
        Vec::new()
    } else {
        read_file(&env.bucket(BUCKET)?, &job.id, job.offset as u64, length)
            .await?
            .ok_or_else(|| ApiError::Storage("an import's file is missing".into()))?
    };
    let at_end = job.offset + bytes.len() as i64 >= job.bytes;
    let (records, used) = import::records_at_most(&bytes, at_end, ROWS_PER_STEP);
    let mut errors = Vec::new();
    let mut step_done = imports::Step {
        offset: job.offset + used as i64,
        done: at_end && used == bytes.len(),
        ..Default::default()
    };
    let first_row = job.rows as u64 + 2;
    if records.len() < ROWS_PER_STEP && used < bytes.len() && (at_end || used == 0) {
        // What is left can never be read: a quote opened and never closed, or a row longer
        // than a chunk. The import stops there, and says so.
        let (code, message) = if at_end {
            (
                "unterminated_quote",
                "a quoted field is never closed; the import stops here".to_owned(),
            )
        } else {
            (
                "row_too_large",
                format!("a row longer than {CHUNK_BYTES} bytes; the import stops here"),
            )
        };
        errors.push(RowError {
            row: first_row + records.len() as u64,
            column: "-".into(),
            code: code.into(),
            message,
        });
        step_done.done = true;
        step_done.rows = 1;
        step_done.rejected = 1;
        step_done.offset = job.bytes;
    }
    let mapping: Value = serde_json::from_str(&job.mapping).unwrap_or(Value::Null);
    let header: Vec<String> = serde_json::from_str(&job.header).unwrap_or_default();
    let mapping = Mapping::parse(&mapping, &header)?;
    let mut events = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let row = first_row + i as u64;
        match mapping.event(record, row) {
            Ok(event) => events.push((row, event)),
            Err(e) => errors.push(e),
        }
    }
    step_done.rows += records.len() as i64;
    step_done.rejected += (records.len() - events.len()) as i64;
    let source = store::sources::by_id(env, &*store::sources::configured(env)?, &job.source_id)
        .await?
        .ok_or_else(|| ApiError::Storage("an import's source is gone".into()))?;
    for chunk in by_bytes(&events) {
        let body = json!({ "batch": chunk.iter().map(|(_, e)| e).collect::<Vec<_>>() }).to_string();
        let decoded = decode(body.as_bytes(), None, now_ms, || {
            id::message_id("seam-import", now_ms, platform::random_bytes())
        })?;
        let accepted =
            accept::accept(env, ctx, &source, decoded, &RequestFacts::default(), now_ms).await?;
        for ((row, _), result) in chunk.iter().zip(&accepted.results) {
            match result.status {
                Status::Accepted => step_done.accepted += 1,
                Status::Duplicate => step_done.duplicates += 1,
                Status::Rejected => {
                    step_done.rejected += 1;
                    errors.push(RowError {
                        row: *row,
                        column: "-".into(),
                        code: result.code.unwrap_or("rejected").into(),
                        message: result.message.clone().unwrap_or_default(),
                    });
                }
            }
        }
    }
    let moved = imports::advance(&db, &job.id, job.offset, &step_done, &errors, now_ms).await?;
    if moved && step_done.done {
        // The rows are events now: the upload is not kept.
        env.bucket(BUCKET)?.delete(file_key(&job.id)).await?;
    } else if moved {
        send(
            env,
            Step {
                import: job.id.clone(),
                offset: step_done.offset,
            },
        )
        .await?;
    }
    Ok(())
}

/// Rows' events in batches of at most [`BATCH_BYTES`] (a wide row counts for more).
fn by_bytes(events: &[(u64, Value)]) -> Vec<&[(u64, Value)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (_, event)) in events.iter().enumerate() {
        let len = event.to_string().len() + 1;
        if i > start && size + len > BATCH_BYTES {
            out.push(&events[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

/// Queues again the steps of imports that stopped moving (run by the sweep cron).
pub async fn resume_stalled(env: &Env, now_ms: i64) -> worker::Result<usize> {
    let stalled = imports::stalled(&env.d1("DB")?, now_ms - STALLED_MS).await?;
    let n = stalled.len();
    for (import, offset) in stalled {
        send(env, Step { import, offset }).await?;
    }
    Ok(n)
}
