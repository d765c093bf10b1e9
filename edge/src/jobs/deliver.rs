//! Delivery through Cloudflare Queues (`DELIVERIES`): sending jobs after the rows that make
//! them durable are committed, the queue consumer that calls destinations, and the sweep's
//! re-send of overdue rows. The rules are core's (`seam_core::activate::deliver`); this module
//! makes the calls.

use std::collections::BTreeMap;

use futures_util::future::{select, Either};
use futures_util::stream::{self, StreamExt};
use seam_core::activate::deliver::{self, Job, Outcome, Parcel, Step, Stored};
use seam_core::activate::policy::{self, Attempt};
use seam_core::activate::HttpRequest;
use serde_json::Value;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    AbortController, Context, Env, Fetch, Headers, MessageBatch, MessageBuilder, Method, Request,
    RequestInit, RequestRedirect, ResponseBody,
};

use crate::{isolate, platform, settings, store};

/// The queue binding.
const QUEUE: &str = "DELIVERIES";
/// A destination gets this long to answer before the attempt counts as a network error.
const CALL_TIMEOUT_MS: u64 = 15_000;
/// Tries at writing a batch's outcomes.
const RECORD_ATTEMPTS: u32 = 3;
/// Calls in flight at once per consumer invocation.
const CONCURRENT_CALLS: usize = 6;
/// Queues take at most 100 messages per `sendBatch`.
const SEND_BATCH: usize = 100;
/// Largest answer a follow-up reads.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Longest delay Queues accepts on a message (12 hours).
const MAX_DELAY_SECONDS: u32 = 43_200;

/// Sends `jobs` to the queue, packed into parcels. A failure is logged, not raised: the rows
/// are committed, and the sweep sends what is overdue.
pub async fn send(env: &Env, jobs: Vec<Job>) {
    send_delayed(env, jobs, 0).await;
}

/// [`send`], each message delayed by `delay_seconds`.
pub async fn send_delayed(env: &Env, jobs: Vec<Job>, delay_seconds: u32) {
    if jobs.is_empty() {
        return;
    }
    let queue = match env.queue(QUEUE) {
        Ok(queue) => queue,
        Err(e) => {
            worker::console_error!("delivery queue unavailable: {e}");
            return;
        }
    };
    let parcels = Parcel::pack(jobs);
    for chunk in parcels.chunks(SEND_BATCH) {
        let messages: Vec<_> = chunk
            .iter()
            .map(|p| {
                MessageBuilder::new(p.clone())
                    .delay_seconds(delay_seconds)
                    .build()
            })
            .collect();
        if let Err(e) = queue.send_batch(messages).await {
            worker::console_error!("delivery enqueue failed ({} parcels): {e}", chunk.len());
        }
    }
}

/// Sends `jobs` after the response.
pub fn send_after_response(ctx: &Context, env: &Env, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let env = env.clone();
    isolate::after_response(ctx, "deliveries", async move { send(&env, jobs).await });
}

/// Re-sends deliveries whose messages are overdue (run by the sweep cron); returns how many.
pub async fn resend_overdue(env: &Env, now_ms: i64) -> worker::Result<usize> {
    let jobs = store::deliveries::overdue(&env.d1("DB")?, now_ms).await?;
    let n = jobs.len();
    send(env, jobs).await;
    Ok(n)
}

/// The queue consumer: claims each message's delivery, calls the destination, and records the
/// outcome. A retry is a fresh message delayed until it is due. Every message is acknowledged:
/// the rows are the truth, and what this run leaves unfinished the sweep sends again.
pub async fn consume(batch: MessageBatch<Value>, env: &Env) -> worker::Result<()> {
    let now_ms = platform::now_ms();
    store::destinations::refresh(env, now_ms).await;
    let jobs: Vec<Job> = batch
        .messages()?
        .iter()
        .filter_map(
            |m| match serde_json::from_value::<Parcel>(m.body().clone()) {
                Ok(parcel) => Some(parcel.unpack()),
                Err(_) => {
                    worker::console_error!("delivery queue: a message that is not a parcel");
                    None
                }
            },
        )
        .flatten()
        .collect();
    let db = env.d1("DB")?;
    let claimed = match store::deliveries::claim(&db, &jobs, now_ms).await {
        Ok(claimed) => claimed,
        Err(e) => {
            // Nothing was claimed: let the queue bring the batch back.
            worker::console_error!("delivery claim failed: {e}");
            batch.retry_all();
            return Ok(());
        }
    };
    let mut destinations = isolate::destinations();
    let unknown = claimed
        .iter()
        .any(|c| !destinations.iter().any(|d| d.name == c.job.destination));
    if unknown {
        // Another isolate may have added it since this one looked: ask D1 before skipping.
        if let Err(e) = store::destinations::reload(env).await {
            worker::console_error!("destinations reload failed: {e}");
            batch.retry_all();
            return Ok(());
        }
        destinations = isolate::destinations();
    }
    let allow_local = settings::allow_local_destinations(env);
    let backoff = settings::delivery_backoff(env);
    let calls = claimed.iter().map(|c| {
        let destination = destinations.iter().find(|d| d.name == c.job.destination);
        let event = c.event.as_ref().map(|(body, timestamp_ms)| Stored {
            body,
            timestamp_ms: *timestamp_ms,
        });
        let step = deliver::prepare(&c.job, destination, event, c.attempt, allow_local);
        async move {
            match step {
                Step::Done(outcome) => (c.job.clone(), outcome, None, c.attempt),
                Step::Send(request, then) => {
                    let mut answer = call(&request, then.is_some()).await;
                    if let (Some(then), Some(200..=299)) = (&then, answer.status) {
                        let next = answer.body.as_ref().and_then(|body| then.next(body));
                        match next {
                            Some(next) if policy::check_url(&next.url, allow_local).is_ok() => {
                                answer = call(&next, false).await;
                            }
                            _ => {
                                let outcome = Outcome::Dead("unexpected_answer".into());
                                return (c.job.clone(), outcome, answer.status, c.attempt);
                            }
                        }
                    }
                    let Answer {
                        status,
                        retry_after,
                        ..
                    } = answer;
                    let attempt = Attempt {
                        status,
                        retry_after: retry_after.as_deref(),
                        number: c.attempt,
                        first_at_ms: c.first_attempt_at,
                        now_ms: platform::now_ms(),
                    };
                    let jitter = f64::from(platform::random_bytes::<1>()[0]) / 256.0;
                    (
                        c.job.clone(),
                        deliver::settle(attempt, &backoff, jitter),
                        status,
                        c.attempt,
                    )
                }
            }
        }
    });
    // A few calls at a time (workerd keeps six connections open per invocation), so each
    // call's timeout runs from its own start.
    let outcomes: Vec<_> = stream::iter(calls)
        .buffer_unordered(CONCURRENT_CALLS)
        .collect()
        .await;
    let done_ms = platform::now_ms();
    for attempt in 1..=RECORD_ATTEMPTS {
        match store::deliveries::record(&db, &outcomes, done_ms).await {
            Ok(()) => break,
            // After the last try the rows stay claimed until their lease ends; the sweep then
            // sends them again under the same delivery IDs, which receivers deduplicate on.
            Err(e) if attempt == RECORD_ATTEMPTS => {
                worker::console_error!("delivery record failed: {e}")
            }
            Err(_) => platform::sleep(200 * u64::from(attempt)).await,
        }
    }
    // Retries due at the same second travel together.
    let mut retries: BTreeMap<u32, Vec<Job>> = BTreeMap::new();
    for (job, outcome, _, _) in &outcomes {
        if let Outcome::Retry { at_ms, .. } = outcome {
            // Rounded up, so the message never arrives before the row is due.
            let seconds = ((at_ms - done_ms).max(0) as u64).div_ceil(1000);
            let delay = u32::try_from(seconds)
                .unwrap_or(MAX_DELAY_SECONDS)
                .min(MAX_DELAY_SECONDS);
            retries.entry(delay).or_default().push(job.clone());
        }
    }
    for (delay, jobs) in retries {
        send_delayed(env, jobs, delay).await;
    }
    batch.ack_all();
    Ok(())
}

/// What a destination answered.
struct Answer {
    /// `None`: no answer in time, or a network error.
    status: Option<u16>,
    retry_after: Option<String>,
    /// The JSON body, when asked for (a follow-up needs it).
    body: Option<Value>,
}

/// Makes one call. Redirects are not followed: a destination's URL is checked, its redirect
/// target would not be.
async fn call(request: &HttpRequest, want_body: bool) -> Answer {
    let failed = Answer {
        status: None,
        retry_after: None,
        body: None,
    };
    let prepared = (|| {
        let headers = Headers::new();
        for (name, value) in &request.headers {
            headers.set(name, value)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(request.method.to_owned()))
            .with_headers(headers)
            .with_redirect(RequestRedirect::Manual);
        if request.method != "GET" {
            init.with_body(Some(request.body.clone().into()));
        }
        Request::new_with_init(&request.url, &init)
    })();
    let Ok(prepared) = prepared else {
        return failed;
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(prepared);
    // The answer, its body included, must come within the timeout.
    let answer = async {
        let mut response = fetch.send_with_signal(&signal).await?;
        let status = response.status_code();
        let retry_after = response.headers().get("Retry-After").ok().flatten();
        let declared = response
            .headers()
            .get("Content-Length")
            .ok()
            .flatten()
            .and_then(|n| n.parse::<usize>().ok());
        // The body is read only when a follow-up needs it (it may echo personal data), and
        // only if small. Otherwise it is cancelled: an unread body holds its connection open
        // until the response is garbage-collected, and under load (24,000 deliveries in a
        // minute, locally) that ran workerd out of file descriptors.
        let body = if want_body && declared.is_none_or(|n| n <= MAX_ANSWER_BYTES) {
            let bytes = response.bytes().await?;
            (bytes.len() <= MAX_ANSWER_BYTES)
                .then(|| serde_json::from_slice(&bytes).ok())
                .flatten()
        } else {
            if let ResponseBody::Stream(stream) = response.body() {
                // A cancel that fails leaves the body to the collector, as before.
                let _ = JsFuture::from(stream.cancel()).await;
            }
            None
        };
        Ok::<_, worker::Error>(Answer {
            status: Some(status),
            retry_after,
            body,
        })
    };
    let answered = match select(Box::pin(answer), Box::pin(platform::sleep(CALL_TIMEOUT_MS))).await
    {
        Either::Left((result, _)) => Some(result),
        Either::Right(_) => None,
    };
    match answered {
        Some(Ok(answer)) => answer,
        Some(Err(_)) => failed,
        None => {
            controller.abort();
            failed
        }
    }
}
