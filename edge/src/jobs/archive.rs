//! The raw event archive's plumbing (`seam_core::archive` has the rules): ingest queues the
//! keys of the events it stored; the consumer claims them and writes the claim's objects from
//! D1's rows; the sweep queues again what nobody claimed or finished and rebuilds the objects
//! an erasure changed. Without the `ARCHIVE` bucket binding there is no archive.

use seam_core::archive::{self, Message, Rewrite, Row};
use serde::Deserialize;
use serde_json::Value;
use worker::{Context, Env, MessageBatch, MessageBuilder, QueueRetryOptionsBuilder};

use crate::store::d1;
use crate::{isolate, platform};

/// The queue's name in `wrangler.toml`: the queue handler dispatches on it (rename both).
pub const QUEUE_NAME: &str = "seam-archive";
const QUEUE: &str = "ARCHIVE_QUEUE";
const BUCKET: &str = "ARCHIVE";
/// Messages per send: a send takes at most 100 messages and 256 KB, and a message of
/// [`archive::KEYS_PER_MESSAGE`] keys is about 40 KB.
const SEND_BATCH: usize = 5;
/// The sweep leaves events this young to the messages already on their way.
const SWEEP_AFTER_MS: i64 = 10 * 60 * 1000;
/// Keys the sweep queues again per run.
const SWEEP_LIMIT: u32 = 5000;
/// Claims the sweep finishes, and objects it rebuilds, per run.
const SWEEP_CLAIMS: u32 = 50;
/// A failed batch comes back after this long.
const RETRY_SECONDS: u32 = 30;

/// How long a claim may take before the sweep finishes it, and an erasure's note must wait
/// before its rewrite ([`archive::SETTLE_MS`]; `ARCHIVE_SETTLE_SECONDS` shortens it in tests).
fn settle_ms(env: &Env) -> i64 {
    env.var("ARCHIVE_SETTLE_SECONDS")
        .ok()
        .and_then(|v| v.to_string().parse::<i64>().ok())
        .map_or(archive::SETTLE_MS, |s| s * 1000)
}

/// Whether the archive is configured (its bucket bound).
pub fn enabled(env: &Env) -> bool {
    env.bucket(BUCKET).is_ok()
}

/// Queues the keys of stored events after the response. A message lost here is not an event
/// lost: the event is stored unclaimed, and the sweep queues it again.
pub fn send_after_response(ctx: &Context, env: &Env, keys: Vec<(String, String)>) {
    if keys.is_empty() || !enabled(env) {
        return;
    }
    let env = env.clone();
    isolate::after_response(ctx, async move {
        if let Err(e) = send(&env, archive::messages(keys)).await {
            worker::console_error!("archive queue: {e}");
        }
    });
}

/// Queues `messages` now.
pub async fn send(env: &Env, messages: Vec<Message>) -> worker::Result<()> {
    if messages.is_empty() || !enabled(env) {
        return Ok(());
    }
    let queue = env.queue(QUEUE)?;
    for chunk in messages.chunks(SEND_BATCH) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|m| MessageBuilder::new(m.clone()).build())
            .collect();
        queue.send_batch(batch).await?;
    }
    Ok(())
}

/// The consumer: claims the events of the batch's messages under one new claim, then writes
/// that claim and any the messages name. A failure sends the batch back: a claim's objects
/// are rebuilt whole, so writing one again replaces it.
pub async fn consume(batch: MessageBatch<Value>, env: &Env) -> worker::Result<()> {
    let mut keys = Vec::new();
    let mut claims = Vec::new();
    for message in batch.messages()? {
        match serde_json::from_value::<Message>(message.body().clone()) {
            Ok(Message::Events { events }) => keys.extend(events),
            Ok(Message::Claim { claim }) => claims.push(claim),
            // Its events stay unclaimed: the sweep queues them again.
            Err(_) => worker::console_error!("archive queue: a message of neither kind"),
        }
    }
    if let Err(e) = write(env, keys, claims).await {
        worker::console_error!("archive: {e}");
        batch.retry_all_with_options(
            &QueueRetryOptionsBuilder::new()
                .with_delay_seconds(RETRY_SECONDS)
                .build(),
        );
    }
    Ok(())
}

async fn write(
    env: &Env,
    keys: Vec<(String, String)>,
    mut claims: Vec<String>,
) -> worker::Result<()> {
    let db = env.d1("DB")?;
    if !keys.is_empty() {
        let claim = archive::claim_id(platform::random_bytes());
        d1::execute(&db, &archive::claim(&keys, &claim)).await?;
        claims.push(claim);
    }
    claims.sort();
    claims.dedup();
    let bucket = env.bucket(BUCKET)?;
    for claim in claims {
        let rows: Vec<Row> = d1::rows(&db, &archive::claimed_rows(&claim)).await?;
        for object in archive::objects(&claim, &rows) {
            bucket.put(object.key, object.body).execute().await?;
        }
        d1::execute(&db, &[archive::mark(&claim, platform::now_ms())]).await?;
    }
    Ok(())
}

/// The sweep's part (every five minutes): keys nobody claimed and claims nobody finished go
/// back on the queue, and the objects erasures changed are rebuilt. Returns how many of each.
pub async fn sweep(env: &Env, now_ms: i64) -> worker::Result<(usize, usize, usize)> {
    if !enabled(env) {
        return Ok((0, 0, 0));
    }
    let db = env.d1("DB")?;
    #[derive(Deserialize)]
    struct Key {
        source_id: String,
        message_id: String,
    }
    let keys: Vec<(String, String)> = d1::rows::<Key>(
        &db,
        &archive::unclaimed(now_ms - SWEEP_AFTER_MS, SWEEP_LIMIT),
    )
    .await?
    .into_iter()
    .map(|k| (k.source_id, k.message_id))
    .collect();
    #[derive(Deserialize)]
    struct Claim {
        claim: String,
    }
    let claims: Vec<Message> = d1::rows::<Claim>(
        &db,
        &archive::unfinished(now_ms - settle_ms(env), SWEEP_CLAIMS),
    )
    .await?
    .into_iter()
    .map(|c| Message::Claim { claim: c.claim })
    .collect();
    let counts = (keys.len(), claims.len());
    send(env, archive::messages(keys)).await?;
    send(env, claims).await?;
    let rewrites: Vec<Rewrite> = d1::rows(
        &db,
        &archive::rewrites_due(now_ms - settle_ms(env), SWEEP_CLAIMS),
    )
    .await?;
    let bucket = env.bucket(BUCKET)?;
    for rewrite in &rewrites {
        let rows: Vec<Row> = d1::rows(&db, &rewrite.rows()).await?;
        match archive::objects(&rewrite.claim, &rows).pop() {
            Some(object) => {
                bucket.put(object.key, object.body).execute().await?;
            }
            None => bucket.delete(rewrite.key()).await?,
        }
        d1::execute(&db, &[rewrite.done()]).await?;
    }
    Ok((counts.0, counts.1, rewrites.len()))
}

/// Objects retention deletes per run at most.
const EXPIRE_LIMIT: usize = 5000;

/// Deletes the archive's objects of whole days received before `cutoff_ms` (retention, with
/// the events' own retention); returns how many.
pub async fn expire(env: &Env, cutoff_ms: i64) -> worker::Result<usize> {
    let Ok(bucket) = env.bucket(BUCKET) else {
        return Ok(0);
    };
    let cutoff = archive::day_of_ms(cutoff_ms);
    let mut deleted = 0;
    // Keys sort by day: the expired ones come first.
    while deleted < EXPIRE_LIMIT {
        let listed = bucket
            .list()
            .prefix(archive::PREFIX)
            .limit(1000)
            .execute()
            .await?;
        let keys: Vec<String> = listed
            .objects()
            .iter()
            .map(|o| o.key())
            .take_while(|k| archive::expired(k, &cutoff))
            .collect();
        if keys.is_empty() {
            break;
        }
        deleted += keys.len();
        let full = keys.len() == 1000;
        bucket.delete_multiple(keys).await?;
        if !full {
            break;
        }
    }
    Ok(deleted)
}
