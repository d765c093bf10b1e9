//! The raw event archive's plumbing (`seam_core::archive` has the rules): ingest queues the
//! lines of the events it stored, the consumer writes them to R2 and marks them archived, and
//! the sweep queues again what is still unmarked.

use seam_core::archive::{self, Entry, Stored};
use serde::Deserialize;
use serde_json::{Map, Value};
use worker::{Context, Env, MessageBatch, MessageBuilder};

use crate::store::d1;
use crate::{isolate, platform};

/// The queue's name in `wrangler.toml`: the queue handler dispatches on it.
pub const QUEUE_NAME: &str = "seam-archive";
const QUEUE: &str = "ARCHIVE_QUEUE";
const BUCKET: &str = "ARCHIVE";
/// Queues take at most 100 messages per send.
const SEND_BATCH: usize = 100;
/// The sweep leaves events this young to the messages already on their way.
const SWEEP_AFTER_MS: i64 = 10 * 60 * 1000;
/// Events the sweep queues again per run.
const SWEEP_LIMIT: u32 = 2000;

/// Queues `entries` after the response. A message lost here is not an event lost: the event is
/// stored unmarked, and the sweep queues it again.
pub fn send_after_response(ctx: &Context, env: &Env, entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    let env = env.clone();
    isolate::after_response(ctx, async move {
        if let Err(e) = send(&env, entries).await {
            worker::console_error!("archive queue: {e}");
        }
    });
}

/// Queues `entries` now.
pub async fn send(env: &Env, entries: Vec<Entry>) -> worker::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let queue = env.queue(QUEUE)?;
    let messages = archive::messages(entries);
    for chunk in messages.chunks(SEND_BATCH) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|m| MessageBuilder::new(m.clone()).build())
            .collect();
        queue.send_batch(batch).await?;
    }
    Ok(())
}

/// The consumer: writes the events D1 still holds unmarked, one object per day and source,
/// then marks them. Any failure sends the whole batch back: objects are keyed by their events,
/// so writing them again replaces them.
pub async fn consume(batch: MessageBatch<Value>, env: &Env) -> worker::Result<()> {
    let entries: Vec<Entry> = batch
        .messages()?
        .iter()
        .filter_map(
            |m| match serde_json::from_value::<Vec<Entry>>(m.body().clone()) {
                Ok(entries) => Some(entries),
                Err(_) => {
                    worker::console_error!(
                        "archive queue: a message that is not a list of entries"
                    );
                    None
                }
            },
        )
        .flatten()
        .collect();
    if let Err(e) = write(env, entries).await {
        worker::console_error!("archive: {e}");
        batch.retry_all();
    }
    Ok(())
}

async fn write(env: &Env, entries: Vec<Entry>) -> worker::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let db = env.d1("DB")?;
    #[derive(Deserialize)]
    struct Key {
        source_id: String,
        message_id: String,
    }
    let pending: std::collections::HashSet<(String, String)> =
        d1::rows::<Key>(&db, &archive::pending(&entries))
            .await?
            .into_iter()
            .map(|k| (k.source_id, k.message_id))
            .collect();
    let entries: Vec<Entry> = entries
        .into_iter()
        .filter(|e| pending.contains(&(e.source_id.clone(), e.message_id.clone())))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let bucket = env.bucket(BUCKET)?;
    for object in archive::objects(&entries) {
        bucket.put(object.key, object.body).execute().await?;
    }
    d1::execute(&db, &[archive::mark_archived(&entries, platform::now_ms())]).await?;
    Ok(())
}

/// Queues again the stored events still unmarked after [`SWEEP_AFTER_MS`] (run by the sweep
/// cron); returns how many.
pub async fn requeue(env: &Env, now_ms: i64) -> worker::Result<usize> {
    #[derive(Deserialize)]
    struct Row {
        source_id: String,
        message_id: String,
        #[serde(rename = "type")]
        kind: String,
        name: Option<String>,
        anonymous_id: Option<String>,
        user_id: Option<String>,
        timestamp: i64,
        received_at: i64,
        body: String,
    }
    let db = env.d1("DB")?;
    let rows: Vec<Row> = d1::rows(
        &db,
        &archive::unarchived(now_ms - SWEEP_AFTER_MS, SWEEP_LIMIT),
    )
    .await?;
    let entries: Vec<Entry> = rows
        .iter()
        .map(|r| {
            let body: Map<String, Value> = serde_json::from_str(&r.body).unwrap_or_default();
            Stored {
                source_id: &r.source_id,
                message_id: &r.message_id,
                kind: &r.kind,
                name: r.name.as_deref(),
                anonymous_id: r.anonymous_id.as_deref(),
                user_id: r.user_id.as_deref(),
                timestamp_ms: r.timestamp,
                received_at_ms: r.received_at,
                body: &body,
            }
            .entry()
        })
        .collect();
    let n = entries.len();
    send(env, entries).await?;
    Ok(n)
}
