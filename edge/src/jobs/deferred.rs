//! Events stored after the answer (`seam_core::collect::deferred`): those of sources with
//! `"ingest": "queue"`, and those accepted while D1 could not store them. Ingestion queues them
//! before it answers; this consumer stores them as ingestion would have, several requests of a
//! source in one D1 batch, and again later while D1 fails. A retry stores nothing twice: the
//! events keep their `messageId`s.

use seam_core::collect::deferred::{self, Deferred};
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::event::EventError;
use seam_core::collect::ingest::{Decoded, EventResult};
use seam_core::collect::live;
use seam_core::collect::source::Source;
use serde_json::Value;
use worker::{
    Context, Env, MessageBatch, MessageBuilder, MessageExt, QueueContentType,
    QueueRetryOptionsBuilder,
};

use crate::accept::{self, Prepared};
use crate::{platform, settings, store};

/// The queue's name in `wrangler.toml`: the queue handler dispatches on it (rename both).
pub const QUEUE_NAME: &str = "seam-ingest";
const QUEUE: &str = "INGEST_QUEUE";
/// The first retry waits this long; each later one as long as the message has waited so far.
const FIRST_RETRY_SECONDS: u32 = 10;
/// The longest wait between attempts: with `max_retries = 100`, about four days of outage.
const LONGEST_RETRY_SECONDS: u32 = 3600;

/// Events one group of a consumer batch holds at most (about 25 requests of 20).
const GROUP_EVENTS: usize = 500;

/// A batch's messages of one source, stored as one request.
struct Group {
    source: Source,
    members: Vec<usize>,
    parts: Vec<Prepared>,
    events: usize,
    newest: i64,
}

/// Queues `decoded`'s valid events, to be accepted later. `Ok` means every one of them is on
/// the queue: the request may then answer that they were accepted.
pub async fn send(
    env: &Env,
    source: &Source,
    facts: &RequestFacts,
    received_at: i64,
    decoded: &Decoded,
) -> worker::Result<()> {
    let queue = env.queue(QUEUE)?;
    let messages = deferred::defer(source, facts, received_at, decoded)
        .map_err(|e| worker::Error::from(e.to_string()))?;
    // One message a send: a batch send takes at most 256 KB, a message up to 96 KB. Sent as
    // text of JSON: a body converted to a JS value would turn its maps into `Map`s, which the
    // queue's JSON encoding writes as `{}`; and JSON content would escape the text again,
    // growing it past the queue's 128 KB.
    for text in messages {
        let message = MessageBuilder::new(text)
            .content_type(QueueContentType::Text)
            .build();
        queue.send(message).await?;
        crate::isolate::queued_ingest(1, platform::now_ms());
    }
    Ok(())
}

/// The consumer: stores the batch's events, the messages of each source together as one
/// request (one D1 batch, one refresh per profile). A group that fails comes back later, each
/// message after a wait that grows with its age.
pub async fn consume(batch: MessageBatch<Value>, env: &Env, ctx: &Context) -> worker::Result<()> {
    let messages = batch.messages()?;
    let result = store_messages(&batch, &messages, env, ctx).await;
    // Their refreshes are counted as after-response work by now.
    crate::isolate::consumed_ingest(messages.iter().map(|m| m.id()));
    result
}

async fn store_messages(
    batch: &MessageBatch<Value>,
    messages: &[worker::Message<Value>],
    env: &Env,
    ctx: &Context,
) -> worker::Result<()> {
    let now_ms = platform::now_ms();
    store::config::refresh(env, now_ms).await;
    store::destinations::refresh(env, now_ms).await;
    let mut groups: Vec<Group> = Vec::new();
    let rules = match settings::identity_rules(env) {
        Ok(rules) => rules,
        Err(e) => {
            worker::console_error!("ingest queue: {}", e.code());
            batch.retry_all();
            return Ok(());
        }
    };
    for (i, message) in messages.iter().enumerate() {
        let held = message
            .body()
            .as_str()
            .map(serde_json::from_str::<Deferred>);
        let Some(Ok(held)) = held else {
            // Only this Worker writes the queue, so a message it cannot read was written by
            // another version of it (a deploy under way): its events were answered accepted,
            // so it comes back, and after the last retry waits on seam-ingest-failed.
            worker::console_error!("ingest queue: a message that is not a set of events");
            retry_later(message, now_ms);
            continue;
        };
        let (source, facts, received_at, decoded) = held.into_decoded();
        let events = decoded.valid().count();
        let prepared = Prepared::new(&source, decoded, &facts, &rules);
        // A group stays within GROUP_EVENTS: a message may hold hundreds of events, and each
        // profile they touch costs queries after the batch.
        let open = groups
            .iter_mut()
            .find(|g| g.source == source && g.events + events <= GROUP_EVENTS);
        match open {
            Some(group) => {
                group.members.push(i);
                group.parts.push(prepared);
                group.events += events;
                group.newest = group.newest.max(received_at);
            }
            None => groups.push(Group {
                source,
                members: vec![i],
                parts: vec![prepared],
                events,
                newest: received_at,
            }),
        }
    }
    for group in groups {
        let joined = Prepared::join(group.parts);
        let stored =
            accept::accept_prepared(env, ctx, &group.source, joined, &rules, group.newest).await;
        if let Ok(accepted) = &stored {
            log_suppressed(env, &group.source, &accepted.results, group.newest).await;
        }
        if let Err(e) = stored {
            let members = group.members;
            worker::console_error!(
                "ingest queue: {} ({} messages again later)",
                e.code(),
                members.len()
            );
            for i in members {
                retry_later(&messages[i], now_ms);
            }
        }
    }
    Ok(())
}

/// Puts `message` back on the queue after a wait as long as it has waited so far (10 s to 1 h).
fn retry_later(message: &worker::Message<Value>, now_ms: i64) {
    let waited = (now_ms - message.timestamp().as_millis() as i64).max(0) / 1000;
    let delay = u32::try_from(waited)
        .unwrap_or(u32::MAX)
        .clamp(FIRST_RETRY_SECONDS, LONGEST_RETRY_SECONDS);
    message.retry_with_options(
        &QueueRetryOptionsBuilder::new()
            .with_delay_seconds(delay)
            .build(),
    );
}

/// Logs the events the consumer refused because their person was deleted, for the console's
/// live view (what else a queued request refused, its answer logged).
async fn log_suppressed(env: &Env, source: &Source, results: &[EventResult], received_at: i64) {
    let suppressed: Vec<EventResult> = results
        .iter()
        .filter(|r| r.code == Some(EventError::Suppressed.code()))
        .cloned()
        .collect();
    if let (Some(log), Ok(db)) = (
        live::log_rejections(&source.id, &suppressed, received_at),
        env.d1("DB"),
    ) {
        store::events::log_refusals(&db, &[log]).await;
    }
}
