//! Native cost of stitching one event into a returning customer's identity graph in seam-core:
//! `stitch(fragment, new_link, rules)` over the stored links of a component holding 50
//! identifiers. `cargo bench -p seam-core --bench identity`; `bench/run.mjs` reports the median
//! against a 50 µs target.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use seam_core::identity::{partition, stitch, IdType, Identifier, Link, ProfileId, Rules};

/// 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;
const HOUR_MS: i64 = 3_600_000;
/// Browsing sessions in the stored history, one anonymous ID each.
const SESSIONS: usize = 38;
/// Collector cookies over the same period (expiry, new browsers).
const COOKIES: usize = 8;
/// Emails the user signed in with over time.
const EMAILS: usize = 3;

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

fn cookie(session: usize) -> Identifier {
    let k = session * COOKIES / SESSIONS;
    id(
        IdType::CookieId,
        format!("ck_7d2f{k:02}a1b3c4d5e6f708192a3b4c5d"),
    )
}

fn email(session: usize) -> Identifier {
    let e = session * EMAILS / SESSIONS;
    id(IdType::Email, format!("ann.{e}@shop.example"))
}

/// The stored links of one customer's component, as the edge keeps them: one link per distinct
/// identifier set (its earliest event). Each session lands anonymously (anonymous ID + cookie),
/// most sessions then sign in (identify: + user ID + email) and keep browsing signed in (+ user
/// ID). 50 identifiers in 1 profile.
fn fragment() -> Vec<Link> {
    let mut links = Vec::new();
    for s in 0..SESSIONS {
        let t = START_MS + i64::try_from(s).unwrap() * 30 * HOUR_MS;
        let mid = |step: &str| format!("src_web/seam-{t}-{s:02}-{step}");
        links.push(Link::new(t, mid("landing"), vec![anon(s), cookie(s)]));
        if s % 5 == 4 {
            continue; // a session that never signed in (the cookie still ties it in)
        }
        links.push(Link::new(
            t + 60_000,
            mid("identify"),
            vec![user(), email(s), anon(s), cookie(s)],
        ));
        links.push(Link::new(
            t + 120_000,
            mid("signed-in"),
            vec![user(), anon(s), cookie(s)],
        ));
    }
    links
}

/// A sign-in on a new session of the latest browser whose storage was cleared: a new anonymous ID
/// joins the profile.
fn new_link() -> Link {
    let t = START_MS + i64::try_from(SESSIONS).unwrap() * 30 * HOUR_MS;
    Link::new(
        t,
        format!("src_web/seam-{t}-new-identify"),
        vec![user(), anon(SESSIONS), cookie(SESSIONS - 1)],
    )
}

fn benches(c: &mut Criterion) {
    let rules = Rules::default();
    let fragment = fragment();
    let new_link = new_link();
    // Guard against benchmarking a different shape: one 50-identifier profile, no conflicts,
    // and the new anonymous ID joins it.
    let before = partition(&fragment, &rules);
    assert_eq!(before.profiles.len(), 1, "the fragment is one profile");
    assert_eq!(before.profiles[0].identifiers.len(), 50);
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
    group.finish();
}

criterion_group!(identity_benches, benches);
criterion_main!(identity_benches);
