//! The raw event archive's plumbing (`seam_core::archive` has the rules): ingest queues the
//! keys of the events it stored; the consumer claims them and writes the claim's objects from
//! D1's rows; the sweep queues again what nobody claimed or finished and rebuilds the objects
//! an erasure changed. Without the `ARCHIVE` bucket binding there is no archive.

use std::collections::{HashMap, HashSet};

use seam_core::archive::{self, compact, rebuild, Message, Rewrite, Row};
use seam_core::collect::source::DEFAULT_DEDUP_WINDOW_DAYS;
use serde::Deserialize;
use serde_json::Value;
use worker::{
    Bucket, Context, D1Database, Env, MessageBatch, MessageBuilder, QueueRetryOptionsBuilder,
};

use crate::store::shards::Shards;
use crate::store::{archive_index, d1, sources};
use crate::{isolate, platform};

/// The queue's name in `wrangler.toml`: the queue handler dispatches on it (rename both).
pub const QUEUE_NAME: &str = "seam-archive";
const QUEUE: &str = "ARCHIVE_QUEUE";
const BUCKET: &str = crate::store::archived::BUCKET;
/// Messages per send: a send takes at most 100 messages and 256 KB, and a message at most
/// [`archive::MESSAGE_BYTES`] of keys.
const SEND_BATCH: usize = 4;
/// The sweep leaves events this young to the messages already on their way.
const SWEEP_AFTER_MS: i64 = 10 * 60 * 1000;
/// Keys the sweep queues again per run.
const SWEEP_LIMIT: u32 = 5000;
/// Claims the sweep finishes per run.
const SWEEP_CLAIMS: u32 = 50;
/// Objects the sweep rebuilds per run at most (two D1 queries and one R2 call each).
const REWRITES: u32 = 300;
/// How long an isolate gathers stored events' keys before it queues them.
const GATHER_MS: u64 = 250;
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

/// Whether the archive is configured (its bucket and queue bound).
pub fn enabled(env: &Env) -> bool {
    env.bucket(BUCKET).is_ok() && env.queue(QUEUE).is_ok()
}

/// Queues the keys of stored events after the response, with those of the other requests the
/// isolate answers within [`GATHER_MS`]: one send instead of one per request (the consumer
/// merges its batch's messages into claims). A message lost here, or keys held by an isolate
/// that is evicted, is not an event lost: the event is stored unclaimed, and the sweep queues
/// it again.
pub fn send_after_response(ctx: &Context, env: &Env, keys: Vec<(String, String)>) {
    if keys.is_empty() || !enabled(env) || !isolate::hold_archive_keys(keys) {
        return;
    }
    let env = env.clone();
    // Not counted as the request's background work: nothing a visitor sees waits for the
    // archive, and the wait would hold up everything that does.
    ctx.wait_until(async move {
        platform::sleep(GATHER_MS).await;
        let started = platform::now_ms();
        if let Err(e) = send(&env, archive::messages(isolate::take_archive_keys())).await {
            worker::console_error!("archive queue: {e}");
        }
        isolate::finished("archive send", platform::now_ms() - started);
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

/// The consumer: the batch's events become claims of up to [`archive::KEYS_PER_MESSAGE`] each
/// ([`archive::claims`]: its messages merged, so a quiet shop's requests do not make an object
/// each), written from D1's rows; a claim a message names is written again. The batch's claims
/// are made, read and marked in one D1 round trip each (not one per message: bursts of queries
/// would stall ingest on the single-threaded database). A claim whose objects fail is queued
/// by name, so its retry writes the same objects; if the claims cannot be made, the batch comes
/// back as it was.
pub async fn consume(batch: MessageBatch<Value>, env: &Env) -> worker::Result<()> {
    let db = env.d1("DB")?;
    let bucket = env.bucket(BUCKET)?;
    let mut claims = Vec::new();
    let mut key_lists = Vec::new();
    for message in batch.messages()? {
        match serde_json::from_value::<Message>(message.body().clone()) {
            Ok(Message::Claim { claim }) => claims.push(claim),
            Ok(Message::Events { events }) => key_lists.push(events),
            // Its events stay unclaimed: the sweep queues them again.
            Err(_) => worker::console_error!("archive queue: a message of neither kind"),
        }
    }
    let mut plan = Vec::new();
    for keys in archive::claims(key_lists) {
        // Claims made in the same millisecond differ only by their random bytes: a repeat
        // would merge two claims into one object past the 500-event bound.
        let claim = loop {
            let claim = archive::claim_id(platform::now_ms(), platform::random_bytes());
            if !claims.contains(&claim) {
                break claim;
            }
        };
        plan.extend(archive::claim(&keys, &claim));
        claims.push(claim);
    }
    if !plan.is_empty() {
        if let Err(e) = d1::execute(&db, &plan).await {
            worker::console_error!("archive claim: {e}");
            batch.retry_all_with_options(&retry());
            return Ok(());
        }
    }
    claims.sort();
    claims.dedup();
    if claims.is_empty() {
        return Ok(());
    }
    let reads: Vec<_> = claims.iter().map(|c| archive::claimed_rows(c)).collect();
    let written = match d1::execute(&db, &reads).await {
        Ok(results) => {
            let mut written = Vec::new();
            for (claim, result) in claims.iter().zip(&results) {
                let rows: Vec<Row> = result.results().unwrap_or_default();
                match put(&bucket, claim, &rows).await {
                    Ok(()) => written.push(claim.clone()),
                    Err(e) => worker::console_error!("archive: claim {claim}: {e}"),
                }
            }
            written
        }
        Err(e) => {
            worker::console_error!("archive: reading claims: {e}");
            Vec::new()
        }
    };
    let now_ms = platform::now_ms();
    let marks: Vec<_> = written.iter().map(|c| archive::mark(c, now_ms)).collect();
    let marked = marks.is_empty() || d1::execute(&db, &marks).await.is_ok();
    let again: Vec<Message> = claims
        .into_iter()
        .filter(|c| !marked || !written.contains(c))
        .map(|claim| Message::Claim { claim })
        .collect();
    if send(env, again).await.is_err() {
        // Left to the sweep, which finds claims with unmarked rows.
        worker::console_error!("archive: claims not queued again");
    }
    Ok(())
}

fn retry() -> worker::QueueRetryOptions {
    QueueRetryOptionsBuilder::new()
        .with_delay_seconds(RETRY_SECONDS)
        .build()
}

/// Writes a claim's objects from its rows.
async fn put(bucket: &Bucket, claim: &str, rows: &[Row]) -> worker::Result<()> {
    for object in archive::objects(claim, rows) {
        bucket.put(object.key, object.body).execute().await?;
    }
    Ok(())
}

/// The sweep's part (every five minutes): the objects erasures changed are rebuilt first (a
/// failing one is skipped, not in the way of the others), then keys nobody claimed and claims
/// nobody finished go back on the queue. Returns how many of each.
pub async fn sweep(env: &Env, now_ms: i64) -> worker::Result<(usize, usize, usize)> {
    if !enabled(env) {
        return Ok((0, 0, 0));
    }
    let db = env.d1("DB")?;
    let bucket = env.bucket(BUCKET)?;
    let settled = now_ms - settle_ms(env);
    let rewrites: Vec<Rewrite> = d1::rows(&db, &archive::rewrites_due(settled, REWRITES)).await?;
    let mut rebuilt = 0;
    for rewrite in &rewrites {
        match rebuild(&db, &bucket, rewrite).await {
            Ok(()) => rebuilt += 1,
            Err(e) => worker::console_error!("archive: rebuilding {}: {e}", rewrite.key()),
        }
    }
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
    let claims: Vec<Message> = d1::rows::<Claim>(&db, &archive::unfinished(settled, SWEEP_CLAIMS))
        .await?
        .into_iter()
        .map(|c| Message::Claim { claim: c.claim })
        .collect();
    let counts = (keys.len(), claims.len());
    send(env, claims).await?;
    send(env, archive::messages(keys)).await?;
    Ok((counts.0, counts.1, rebuilt))
}

async fn rebuild(db: &D1Database, bucket: &Bucket, rewrite: &Rewrite) -> worker::Result<()> {
    let key = rewrite.key();
    let rows: Vec<Row> = d1::rows(db, &rewrite.rows()).await?;
    let unreadable = || worker::Error::RustError("an unreadable archive object".into());
    let old = match bucket.get(key.clone()).execute().await? {
        Some(object) => {
            let body = object.body().ok_or_else(unreadable)?;
            rebuild::gunzip(&body.bytes().await?)
                .map(|text| rebuild::lines(&text))
                .ok_or_else(unreadable)?
        }
        None => Vec::new(),
    };
    // What only the archive holds is kept unless erased or stored again since.
    let only = rebuild::archived_only(&old, &rows);
    let mut tombstones = HashMap::new();
    let mut elsewhere = HashSet::new();
    if !only.is_empty() {
        let mut people: Vec<i64> = only.iter().flat_map(|l| l.people()).collect();
        people.sort_unstable();
        people.dedup();
        let ids: Vec<&str> = only.iter().map(|l| l.message_id.as_str()).collect();
        let reads = [compact::tombstones(&people), rewrite.held_elsewhere(&ids)];
        let results = d1::execute(db, &reads).await?;
        #[derive(Deserialize)]
        struct Tombstone {
            person: String,
            erased_at: i64,
        }
        #[derive(Deserialize)]
        struct Held {
            message_id: String,
        }
        let [found, held] = results.as_slice() else {
            return Err(worker::Error::RustError(
                "a read batch lost a result".into(),
            ));
        };
        tombstones = found
            .results::<Tombstone>()?
            .into_iter()
            .filter_map(|t| Some((t.person.parse().ok()?, t.erased_at)))
            .collect();
        elsewhere = held
            .results::<Held>()?
            .into_iter()
            .map(|h| h.message_id)
            .collect();
    }
    match rebuild::rebuilt(key.clone(), &rows, &old, &tombstones, &elsewhere) {
        Some(object) => {
            bucket.put(object.key, object.body).execute().await?;
        }
        None => bucket.delete(key).await?,
    }
    d1::execute(db, &[rewrite.done()]).await?;
    Ok(())
}

/// Compaction rounds per sweep at most ([`compact::ROUND`] rows each).
const COMPACT_ROUNDS: usize = 20;

/// How long an archived event keeps its row in D1 (`HOT_EVENT_HOURS`, default
/// [`compact::DEFAULT_HOT_HOURS`]; 0 compacts whatever is archived).
fn hot_ms(env: &Env) -> i64 {
    env.var("HOT_EVENT_HOURS")
        .ok()
        .and_then(|v| v.to_string().parse::<i64>().ok())
        .filter(|h| *h >= 0)
        .unwrap_or(compact::DEFAULT_HOT_HOURS)
        * 3_600_000
}

/// Takes archived events past the hot window out of D1 (the sweep's part, after the archive's
/// own), and forgets dedup keys whose window ended. Returns how many events it took.
pub async fn compact(env: &Env, now_ms: i64) -> worker::Result<usize> {
    if !enabled(env) {
        return Ok(0);
    }
    let db = Shards::of(env).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let configured =
        sources::configured(env).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let windows = sources::dedup_windows(env, &configured)
        .await
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    // A source removed since keeps the longest window any source has.
    let longest = windows
        .values()
        .copied()
        .max()
        .unwrap_or(DEFAULT_DEDUP_WINDOW_DAYS);
    let window = |source_id: &str| windows.get(source_id).copied().unwrap_or(longest);
    let hot_before = now_ms - hot_ms(env);
    // A claim marked this recently may still have a consumer writing it (a redelivered message).
    let settled_before = now_ms - settle_ms(env);
    let mut at: compact::Cursor = d1::rows(&db, &compact::cursor())
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut taken = 0;
    for _ in 0..COMPACT_ROUNDS {
        let read: Vec<compact::Candidate> = d1::rows(
            &db,
            &compact::candidates(&at, hot_before, settled_before, compact::ROUND),
        )
        .await?;
        let whole = read.len() == compact::ROUND as usize;
        let next = read.last().map(compact::Candidate::cursor);
        let mut rows: Vec<compact::Cold> = read
            .into_iter()
            .filter_map(compact::Candidate::ready)
            .collect();
        let in_db = |person: i64| archive_index::in_db(&db, person);
        // Entries in other databases first: if `DB`'s batch then fails, they name objects
        // that hold those lines all the same, and the next round writes them again.
        let refused = archive_index::write(&db, &compact::elsewhere(&rows, in_db)).await?;
        // A person a shard's tombstone refused is being erased, or was: unless `DB` holds
        // their tombstone too (the erasure committed), the erasure's read there did not see
        // these entries and its transaction in `DB` is still to come (or to be retried). Their
        // rows stay, for it to take, noting their objects.
        let committed = archive_index::tombstones_in_db(&db, &refused).await?;
        rows.retain(|r| {
            !r.people().iter().any(|p| {
                refused.contains(p) && committed.get(p).is_none_or(|&at| at < r.received_at)
            })
        });
        let mut plan = compact::compact(&rows, window, now_ms, in_db);
        // At the hot edge the next sweep starts again from the oldest row.
        let next = next.filter(|_| whole);
        plan.push(compact::save_cursor(next.as_ref()));
        d1::execute(&db, &plan).await?;
        taken += rows.len();
        match next {
            Some(next) => at = next,
            None => break,
        }
    }
    d1::execute(&db, &[compact::expire_keys(now_ms)]).await?;
    Ok(taken)
}

/// Objects retention deletes per run at most.
const EXPIRE_LIMIT: usize = 50_000;

/// Deletes the archive's objects of whole days received before `cutoff_ms` (retention, with
/// the events' own retention); returns how many.
pub async fn expire(env: &Env, cutoff_ms: i64) -> worker::Result<usize> {
    let Ok(bucket) = env.bucket(BUCKET) else {
        return Ok(0);
    };
    let cutoff = archive::day_of_ms(cutoff_ms);
    let prefix = format!("{}dt=", archive::PREFIX);
    let mut deleted = 0;
    let mut after: Option<String> = None;
    // Keys sort by day: the expired ones come first; anything else under the prefix is skipped.
    while deleted < EXPIRE_LIMIT {
        let mut list = bucket.list().prefix(prefix.clone()).limit(1000);
        if let Some(after) = &after {
            list = list.start_after(after.clone());
        }
        let listed = list.execute().await?;
        let objects = listed.objects();
        let mut keys = Vec::new();
        let mut past = false;
        for key in objects.iter().map(|o| o.key()) {
            match archive::day_of(&key) {
                Some(day) if day >= cutoff.as_str() => {
                    past = true;
                    break;
                }
                Some(_) => keys.push(key.clone()),
                None => {}
            }
            after = Some(key);
        }
        deleted += keys.len();
        if !keys.is_empty() {
            bucket.delete_multiple(keys).await?;
        }
        if past || !listed.truncated() {
            break;
        }
    }
    Ok(deleted)
}
