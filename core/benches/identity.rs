//! Native cost of identity resolution in seam-core for a returning customer whose component holds
//! 50 identifiers: `stitch(fragment, new_link, rules)` (one event joins the graph) and
//! `partition(fragment, rules)` (what the edge recomputes per request).
//! `cargo bench -p seam-core --bench identity`; `bench/run.mjs` reports the stitch median against
//! a 50 µs target.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use seam_core::identity::{partition, stitch, IdType, Identifier, Link, ProfileId, Rules};

/// 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;
const HOUR_MS: i64 = 3_600_000;
/// Sessions in the stored history, one anonymous ID each.
const SESSIONS: usize = 36;
/// Every fourth session is in the mobile app (device ID), the rest in a browser (cookie ID).
const APP_EVERY: usize = 4;
/// Phones/tablets the app ran on.
const DEVICES: usize = 4;
/// Collector cookies over the browser sessions (expiry, new browsers).
const COOKIES: usize = 6;
/// Emails the user signed in with over time.
const EMAILS: usize = 3;
/// Browser sessions (the others are app sessions).
const WEB_SESSIONS: usize = SESSIONS - SESSIONS / APP_EVERY;

fn id(kind: IdType, value: String) -> Identifier {
    Identifier::new(kind, value)
}

fn user() -> Identifier {
    id(IdType::UserId, "user-8841".into())
}

fn anon(session: usize) -> Identifier {
    id(
        IdType::AnonymousId,
        format!("3f1c2a9e-8d4b-4c7a-9e21-{:012x}", 0x5eed_0000 + session),
    )
}

fn email(session: usize) -> Identifier {
    let e = session * EMAILS / SESSIONS;
    id(IdType::Email, format!("ann.{e}@shop.example"))
}

/// The session's client: the app's device ID or the browser's collector cookie.
fn client(session: usize) -> Identifier {
    if session % APP_EVERY == APP_EVERY - 1 {
        let d = (session / APP_EVERY) % DEVICES;
        id(
            IdType::DeviceId,
            format!("9A1F3C7E-2B4D-4E6F-8A0B-C1D2E3F4A5{d:02}"),
        )
    } else {
        let web = session - session / APP_EVERY;
        let k = web * COOKIES / WEB_SESSIONS;
        id(
            IdType::CookieId,
            format!("ck_7d2f{k:02}a1b3c4d5e6f708192a3b4c5d"),
        )
    }
}

/// The stored links of one customer's component, as the edge keeps them: one link per distinct
/// identifier set (its earliest event). Each session lands anonymously (anonymous ID + cookie or
/// device ID); most then sign in (identify: + user ID + email) and keep browsing signed in (+ user
/// ID); some arrive from a campaign mail (+ email, not signed in). 50 identifiers (36 anonymous
/// IDs, 6 cookies, 4 device IDs, 3 emails, 1 user ID) in 1 profile, from 94 links.
fn fragment() -> Vec<Link> {
    let mut links = Vec::new();
    for s in 0..SESSIONS {
        let t = START_MS + i64::try_from(s).unwrap() * 30 * HOUR_MS;
        let mid = |step: &str| format!("src_web/seam-{t}-{s:02}-{step}");
        links.push(Link::new(t, mid("landing"), vec![anon(s), client(s)]));
        if s % 5 == 4 {
            continue; // a session that never signed in (the cookie/device still ties it in)
        }
        if s % 7 == 3 {
            // Arrived from a campaign mail: the email rides in context.traits.
            links.push(Link::new(
                t + 30_000,
                mid("campaign"),
                vec![email(s), anon(s), client(s)],
            ));
        }
        links.push(Link::new(
            t + 60_000,
            mid("identify"),
            vec![user(), email(s), anon(s), client(s)],
        ));
        links.push(Link::new(
            t + 120_000,
            mid("signed-in"),
            vec![user(), anon(s), client(s)],
        ));
    }
    links
}

/// A sign-in in the app on a phone whose storage was cleared: a new anonymous ID joins the
/// profile.
fn new_link() -> Link {
    let t = START_MS + i64::try_from(SESSIONS).unwrap() * 30 * HOUR_MS;
    Link::new(
        t,
        format!("src_web/seam-{t}-new-identify"),
        vec![user(), anon(SESSIONS), client(APP_EVERY - 1)],
    )
}

fn benches(c: &mut Criterion) {
    let rules = Rules::default();
    let fragment = fragment();
    let new_link = new_link();
    // Guard against benchmarking a different shape: one 50-identifier profile of every kind, no
    // conflicts, and the new anonymous ID joins it.
    let before = partition(&fragment, &rules);
    assert_eq!(before.profiles.len(), 1, "the fragment is one profile");
    let ids = &before.profiles[0].identifiers;
    assert_eq!(ids.len(), 50);
    let count = |kind: IdType| ids.iter().filter(|i| i.kind == kind).count();
    assert_eq!(
        [
            IdType::UserId,
            IdType::Email,
            IdType::DeviceId,
            IdType::CookieId,
            IdType::AnonymousId
        ]
        .map(count),
        [1, EMAILS, DEVICES, COOKIES, SESSIONS]
    );
    assert!(before.conflicts.is_empty());
    let plan = stitch(&fragment, new_link.clone(), &rules);
    assert!(plan.is_new_link && plan.conflicts.is_empty() && plan.merges.is_empty());
    assert_eq!(plan.profile_id, Some(ProfileId::for_identifier(&user())));
    assert_eq!(plan.assignments.len(), 51);

    let mut group = c.benchmark_group("identity");
    group.bench_function("stitch_50_identifiers", |b| {
        b.iter_batched(
            || new_link.clone(),
            |link| stitch(black_box(&fragment), link, &rules),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("partition_50_identifiers", |b| {
        b.iter(|| partition(black_box(&fragment), &rules))
    });
    group.finish();
}

criterion_group!(identity_benches, benches);
criterion_main!(identity_benches);
