//! One ingest request's D1 batch, with the place of every result the edge reads back.
//!
//! Events, their identity links and their trait values commit together: no event is ever stored
//! without its contribution to the graph (with profile shards, the links other databases hold
//! are written first). Links and traits are idempotent upserts, so a retried
//! batch changes nothing. The batch ends with checks and reads that save round trips: the
//! suppression list as of commit time (another isolate may have suppressed someone since this
//! one cached it), the current assignments of the links' best identifiers (a known visitor with
//! no new links needs no resolution) and, when a refresh is likely, the visitor's profile.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use crate::activate::deliver::{self, Route};
use crate::collect::event::Event;
use crate::collect::ingest::Decoded;
use crate::collect::source::Source;
use crate::identity::graph_plan::{
    identifiers_param, link_seqs, members_of, probe_assignments, set_key, upsert_traits,
    Contributions,
};
use crate::identity::{mentioned_identifiers, Identifier, Link, Rules};
use crate::personalise::refresh::feeds_computed;
use crate::plan::{insert_events, Param, Statement};
use crate::privacy::retention::touch_profiles;
use crate::privacy::ConsentRecord;
use crate::privacy::{count_rejections, record_consent, suppression_key, suppression_probe};

/// What a request stores, as core decided it.
#[allow(missing_docs)] // the fields say what they hold
pub struct IngestInput<'a> {
    pub source: &'a Source,
    /// Valid events after enrichment, consent policy and suppression.
    pub events: &'a [&'a Event],
    /// Their links and trait rows.
    pub graph: &'a Contributions,
    /// The link writes this database takes: all of [`upsert_links`] of `graph.links`, or with
    /// profile shards its share ([`crate::identity::graph_plan::link_copies`]; the others are
    /// written before this batch).
    pub links: &'a [Statement],
    /// Consent changes to record (suppressed identifiers already left out).
    pub consent: &'a [ConsentRecord],
    /// The whole request, for its rejection counts.
    pub decoded: &'a Decoded,
    pub received_at: i64,
    pub rules: &'a Rules,
    /// Whether a personalisation configuration is in force (its events make a refresh likely).
    pub personalising: bool,
    /// Which events go to which destinations ([`deliver::route`]).
    pub routes: &'a [Route],
    /// Where the links' identifiers' assignments are ([`Placed`]).
    pub placed: Placed<'a>,
}

/// Where assignments are, for the probe and the visitor's profile read (with profile shards
/// each lives in its identifier's home; the databases holding the others probe theirs when
/// they write their links, before this batch).
#[derive(Clone, Copy)]
pub struct Placed<'a> {
    /// Whether an identifier's assignment may be in `DB`: the batch probes those.
    pub may_be_here: &'a dyn Fn(&Identifier) -> bool,
    /// Whether it can only be in `DB`: the batch reads the visitor's profile through the best
    /// identifier's assignment only then.
    pub only_here: &'a dyn Fn(&Identifier) -> bool,
    /// The profiles the other databases' probes found (a JSON array): touched with those the
    /// probe here finds.
    pub elsewhere: &'a str,
}

impl Placed<'_> {
    /// One database holds every assignment.
    pub const ONE: Placed<'static> = Placed {
        may_be_here: &|_| true,
        only_here: &|_| true,
        elsewhere: "[]",
    };
}

/// The batch and the positions of the results read back.
pub struct IngestPlan {
    statements: Vec<Statement>,
    events: Range<usize>,
    deliveries: Range<usize>,
    links: Range<usize>,
    link_seqs: Option<usize>,
    suppression_probe: Option<usize>,
    assignments: Option<usize>,
    profile_reads: Option<Range<usize>>,
    best: Option<Identifier>,
}

impl IngestPlan {
    /// Plans the batch for `input`.
    pub fn new(input: IngestInput<'_>) -> Self {
        let IngestInput {
            source,
            events,
            graph,
            links,
            consent,
            decoded,
            received_at,
            rules,
            personalising,
            routes,
            placed,
        } = input;
        let mut statements =
            insert_events(&source.id, events, received_at, source.dedup_window_days);
        let events_at = 0..statements.len();
        // The outbox rows commit with their events (after them: they select the rows stored,
        // told from duplicates by their receipt time). A queue consumer's merged requests keep
        // their own receipt times, so each time gets its own selection.
        let mut times: Vec<i64> = events.iter().map(|e| e.received_at_ms).collect();
        times.sort_unstable();
        times.dedup();
        let at_time = |at: i64| -> Vec<&Event> {
            events
                .iter()
                .filter(|e| e.received_at_ms == at)
                .copied()
                .collect()
        };
        for &at in &times {
            let ids: BTreeSet<&str> = at_time(at).iter().map(|e| e.message_id.as_str()).collect();
            let routes_at: Vec<Route> = routes
                .iter()
                .map(|r| Route {
                    destination: r.destination.clone(),
                    message_ids: r
                        .message_ids
                        .iter()
                        .filter(|m| ids.contains(m.as_str()))
                        .cloned()
                        .collect(),
                })
                .filter(|r| !r.message_ids.is_empty())
                .collect();
            statements.extend(deliver::enqueue(&source.id, &routes_at, at));
        }
        let deliveries_at = events_at.end..statements.len();
        for &at in &times {
            statements.extend(super::live::count_stored(&source.id, at, &at_time(at)));
        }
        let links_start = statements.len();
        statements.extend_from_slice(links);
        let links_at = links_start..statements.len();
        let link_seqs = link_seqs(&graph.links).map(|read| {
            statements.push(read);
            statements.len() - 1
        });
        statements.extend(upsert_traits(&graph.traits));
        statements.extend(record_consent(consent));
        statements.extend(count_rejections(&source.id, received_at, decoded));
        let identifiers: Vec<&Identifier> =
            graph.links.iter().flat_map(|l| &l.identifiers).collect();
        // Claims count too: a suppressed person's email must not return in someone's traits.
        let mentioned: BTreeSet<Identifier> = events
            .iter()
            .flat_map(|e| mentioned_identifiers(e, rules))
            .collect();
        let keys: Vec<String> = mentioned.iter().map(suppression_key).collect();
        let suppression_at = (!keys.is_empty()).then(|| {
            statements.push(suppression_probe(&keys));
            statements.push(touch_profiles(
                &identifiers_param(identifiers.iter().copied()),
                placed.elsewhere,
                received_at,
            ));
            statements.len() - 2
        });
        let best = graph
            .links
            .last()
            .and_then(|l| l.identifiers.first())
            .cloned();
        let mut assignments = None;
        let mut profile_reads = None;
        if let Some(best) = &best {
            let here: Vec<&Identifier> = identifiers
                .iter()
                .copied()
                .filter(|i| (placed.may_be_here)(i))
                .collect();
            if !here.is_empty() {
                assignments = Some(statements.len());
                statements.push(probe_assignments(here));
            }
            // The profile's read model as this batch leaves it, for the refresh when the
            // visitor's profile did not change (most traffic): one round trip fewer. Only when
            // a refresh is likely; otherwise the refresh reads for itself.
            let refresh_likely = !graph.traits.is_empty()
                || (personalising && feeds_computed(events.iter().copied()));
            if refresh_likely && (placed.only_here)(best) {
                let profile = "(SELECT profile_id FROM identities WHERE identifier = ?1)";
                let start = statements.len();
                statements.extend(view_reads(profile, &best.to_string()));
                profile_reads = Some(start..statements.len());
            }
        }
        IngestPlan {
            statements,
            events: events_at,
            deliveries: deliveries_at,
            links: links_at,
            link_seqs,
            suppression_probe: suppression_at,
            assignments,
            profile_reads,
            best,
        }
    }

    /// The statements, for one D1 batch.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The visitor's best identifier (of the request's last link with identifiers).
    pub fn best(&self) -> Option<&Identifier> {
        self.best.as_ref()
    }

    /// The event inserts' results (their `RETURNING` rows name the events stored now).
    pub fn event_results<'r, R>(&self, results: &'r [R]) -> &'r [R] {
        results.get(self.events.clone()).unwrap_or_default()
    }

    /// The outbox inserts' results: their `RETURNING` rows are the deliveries to send.
    pub fn delivery_results<'r, R>(&self, results: &'r [R]) -> &'r [R] {
        results.get(self.deliveries.clone()).unwrap_or_default()
    }

    /// Whether any link upsert returned a row (a link new to the graph).
    pub fn links_changed<R>(&self, results: &[R], returned_rows: impl Fn(&R) -> bool) -> bool {
        results
            .get(self.links.clone())
            .unwrap_or_default()
            .iter()
            .any(returned_rows)
    }

    /// The read of the links' stored `seq`s ([`link_seqs`]) in this database.
    pub fn link_seqs<'r, R>(&self, results: &'r [R]) -> Option<&'r R> {
        self.link_seqs.and_then(|i| results.get(i))
    }

    /// The suppression probe's result: keys suppressed as of commit.
    pub fn suppression_probe<'r, R>(&self, results: &'r [R]) -> Option<&'r R> {
        self.suppression_probe.and_then(|i| results.get(i))
    }

    /// The assignment probe's result: the best identifiers' current profiles.
    pub fn assignments<'r, R>(&self, results: &'r [R]) -> Option<&'r R> {
        self.assignments.and_then(|i| results.get(i))
    }

    /// The visitor profile's reads ([`view_reads`]), when the batch made them.
    pub fn profile_reads<'r, R>(&self, results: &'r [R]) -> Option<&'r [R]> {
        self.profile_reads.clone().and_then(|r| results.get(r))
    }
}

/// An identifier's assignment as the batch's probe read it: its profile and the highest link
/// `seq` it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The profile.
    pub profile_id: String,
    /// `identities.seq`.
    pub seq: i64,
}

/// The visitor's profile when the batch settled it without a resolution: no link was new,
/// every identifier of every link is assigned (`assigned`: identifier text -> assignment),
/// and no link is unresolved: one whose identifiers are in several profiles with an assignment
/// older than the link's stored `seq` (`seqs` by set key). The try that stored such a link
/// failed before its resolution ran, and this is its retry. A link the rules refused is in
/// several profiles too, but its resolution saw it. (A value extraction keeps and the rules
/// block, which only a pre-hashed email or phone on the block list can be, stays unassigned:
/// its requests resolve each time.)
/// Returns the visitor's profile and `(message key, profile)` for every link.
pub fn settled_profiles(
    links: &[Link],
    best: &Identifier,
    links_changed: bool,
    assigned: &HashMap<String, Assigned>,
    seqs: &HashMap<String, i64>,
) -> Option<(String, Vec<(String, String)>)> {
    let unresolved = |link: &Link| {
        let found: Vec<&Assigned> = link
            .identifiers
            .iter()
            .filter_map(|i| assigned.get(&i.to_string()))
            .collect();
        let seq = seqs.get(&set_key(link)).copied().unwrap_or(0);
        let apart = found.iter().any(|a| a.profile_id != found[0].profile_id);
        found.len() < link.identifiers.len() || (apart && found.iter().any(|a| a.seq < seq))
    };
    let all_assigned = links
        .iter()
        .filter_map(|l| l.identifiers.first())
        .all(|b| assigned.contains_key(&b.to_string()));
    if links_changed || !all_assigned || links.iter().any(unresolved) {
        return None;
    }
    let profile_id = assigned.get(&best.to_string())?.profile_id.clone();
    let profile_of = links
        .iter()
        .filter_map(|l| {
            let best = l.identifiers.first()?.to_string();
            Some((
                l.message_id.clone(),
                assigned.get(&best)?.profile_id.clone(),
            ))
        })
        .collect();
    Some((profile_id, profile_of))
}

/// The three reads of a profile's read model (identifiers, trait rows, personalisation state
/// and version) for the profile that `profile` (SQL: `?1`, or a subquery over `?1`) names, `?1`
/// bound to `param`.
pub fn view_reads(profile: &str, param: &str) -> [Statement; 3] {
    let members = members_of(profile);
    [
        format!("{members} ORDER BY identifier"),
        format!(
            "SELECT identifier, key, once, value, timestamp, message_key FROM trait_values \
             WHERE identifier IN ({members})"
        ),
        format!("SELECT state, version FROM profile_personalisation WHERE profile_id = {profile}"),
    ]
    .map(|sql| Statement {
        sql,
        params: vec![Param::Text(param.to_owned())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ingest::decode;
    use crate::collect::source::parse_source;
    use crate::identity::graph_plan::{contributions, upsert_links, LOAD_IDENTITIES_SQL};
    use crate::identity::Rules;
    use serde_json::json;

    const T0: i64 = 1_800_000_000_000;

    fn decoded(batch: serde_json::Value) -> Decoded {
        let body = json!({ "batch": batch }).to_string();
        decode(body.as_bytes(), None, T0, || "generated".into()).unwrap()
    }

    /// The plan for `decoded` received (newest) at `received_at`, routing `routed` to "hooks".
    fn plan_of(
        decoded: &Decoded,
        received_at: i64,
        personalising: bool,
        routed: &[&str],
    ) -> IngestPlan {
        plan_placed(decoded, received_at, personalising, routed, Placed::ONE)
    }

    /// [`plan_of`] with assignments placed by `placed`.
    fn plan_placed(
        decoded: &Decoded,
        received_at: i64,
        personalising: bool,
        routed: &[&str],
        placed: Placed<'_>,
    ) -> IngestPlan {
        let source = parse_source("k", &json!({"id": "web"})).unwrap();
        let events: Vec<&Event> = decoded.valid().collect();
        let graph = contributions(&events, &source.id, &Rules::default());
        let links = upsert_links(&graph.links, 0);
        IngestPlan::new(IngestInput {
            source: &source,
            events: &events,
            graph: &graph,
            links: &links,
            consent: &[],
            decoded,
            received_at,
            rules: &Rules::default(),
            personalising,
            routes: &[Route {
                destination: "hooks".into(),
                message_ids: routed.iter().map(|m| m.to_string()).collect(),
            }],
            placed,
        })
    }

    fn plan_for(batch: serde_json::Value, personalising: bool) -> (IngestPlan, Vec<String>) {
        let plan = plan_of(&decoded(batch), T0, personalising, &["m1"]);
        // Each "result" is its statement's SQL, so a position read names what it read.
        let results = plan.statements().iter().map(|s| s.sql.clone()).collect();
        (plan, results)
    }

    #[test]
    fn merged_requests_get_deliveries_and_counts_at_their_own_receipt_times() {
        let first = decoded(
            json!([{"type": "track", "event": "A", "anonymousId": "a1", "messageId": "m1"}]),
        );
        let body = json!({ "batch": [{"type": "track", "event": "B", "anonymousId": "a2", "messageId": "m2"}] }).to_string();
        let second = decode(body.as_bytes(), None, T0 + 5, || "generated".into()).unwrap();
        let merged = crate::collect::deferred::merge([first, second]);
        let plan = plan_of(&merged, T0 + 5, false, &["m1", "m2"]);
        let results: Vec<&Statement> = plan.statements().iter().collect();
        let deliveries = plan.delivery_results(&results);
        let selected: Vec<(i64, &Param)> = deliveries
            .iter()
            .map(|s| match (&s.params[1], &s.params[3]) {
                (Param::Int(at), id) => (*at, id),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            selected,
            [
                (T0, &Param::Text("m1".into())),
                (T0 + 5, &Param::Text("m2".into()))
            ],
            "each request's events are selected at its own receipt time"
        );
        let counts = plan
            .statements()
            .iter()
            .filter(|s| s.sql.starts_with("INSERT INTO event_counts"))
            .count();
        assert_eq!(counts, 2);
    }

    #[test]
    fn every_result_is_read_from_its_own_statement() {
        let (plan, results) = plan_for(
            json!([
                {"type": "track", "event": "Product Viewed", "anonymousId": "a1", "messageId": "m1"},
                {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m2",
                 "traits": {"plan": "gold"}},
                {"type": "track", "messageId": "bad"}
            ]),
            false,
        );
        assert!(plan
            .event_results(&results)
            .iter()
            .all(|sql| sql.starts_with("INSERT INTO events")));
        assert!(!plan.event_results(&results).is_empty());
        assert_eq!(plan.delivery_results(&results).len(), 1);
        assert!(plan.delivery_results(&results)[0].starts_with("INSERT INTO deliveries"));
        assert!(plan
            .suppression_probe(&results)
            .is_some_and(|sql| sql.contains("FROM suppressions")));
        assert_eq!(
            plan.assignments(&results).map(String::as_str),
            Some(LOAD_IDENTITIES_SQL)
        );
        let reads = plan
            .profile_reads(&results)
            .expect("traits changed: a refresh is likely");
        assert_eq!(reads.len(), 3);
        assert!(reads[2].contains("profile_personalisation"));
        assert!(plan.links_changed(&results, |sql| sql.contains("identity_links")));
        assert!(
            !plan.links_changed(&results, |sql| sql.starts_with("SELECT")),
            "the read of the links' seqs is not one of their writes"
        );
        assert!(plan
            .link_seqs(&results)
            .is_some_and(|sql| sql.starts_with("SELECT set_key, seq FROM identity_links")));
        assert_eq!(
            plan.best().map(ToString::to_string).as_deref(),
            Some("user_id:u1")
        );
    }

    #[test]
    fn profile_reads_only_when_a_refresh_is_likely() {
        let view = json!([{"type": "track", "event": "Product Viewed", "anonymousId": "a1",
                           "messageId": "m1", "properties": {"product_id": "p1"}}]);
        let identify = json!([{"type": "identify", "anonymousId": "a1", "messageId": "m1"}]);
        let cases = [
            ("a view, personalisation on", view.clone(), true, true),
            ("a view, personalisation off", view, false, false),
            ("an identify without traits", identify, true, false),
        ];
        for (name, batch, personalising, reads) in cases {
            let (plan, results) = plan_for(batch, personalising);
            assert_eq!(plan.profile_reads(&results).is_some(), reads, "{name}");
        }
    }

    #[test]
    fn probes_here_only_what_may_be_here_and_reads_the_profile_only_through_an_assignment_only_here(
    ) {
        let batch = decoded(
            json!([{"type": "identify", "anonymousId": "a1", "userId": "u1",
                                     "messageId": "m1", "traits": {"plan": "gold"}}]),
        );
        let anonymous_here = |i: &Identifier| i.to_string().starts_with("anonymous_id:");
        let placed = Placed {
            may_be_here: &anonymous_here,
            only_here: &anonymous_here,
            elsewhere: r#"["prof_elsewhere"]"#,
        };
        let plan = plan_placed(&batch, T0, true, &[], placed);
        let results: Vec<&Statement> = plan.statements().iter().collect();
        let probe = plan
            .assignments(&results)
            .expect("a probe of the anonymous ID");
        assert!(
            matches!(&probe.params[0], Param::Text(t) if t.contains("anonymous_id:a1") && !t.contains("user_id:u1")),
            "the user ID's assignment is probed in its own shard"
        );
        assert!(
            plan.profile_reads(&results).is_none(),
            "the best identifier (the user ID) is assigned elsewhere"
        );
        let touch = plan
            .statements()
            .iter()
            .find(|s| s.sql.starts_with("UPDATE profile_members SET last_seen"))
            .expect("a touch");
        assert!(touch
            .params
            .contains(&Param::Text(r#"["prof_elsewhere"]"#.into())));

        let nothing_here = |_: &Identifier| false;
        let placed = Placed {
            may_be_here: &nothing_here,
            only_here: &nothing_here,
            elsewhere: "[]",
        };
        let plan = plan_placed(&batch, T0, true, &[], placed);
        let results: Vec<&Statement> = plan.statements().iter().collect();
        assert!(plan.assignments(&results).is_none(), "no probe in DB");
        assert!(plan.profile_reads(&results).is_none());
        assert_eq!(
            plan.best().map(ToString::to_string).as_deref(),
            Some("user_id:u1")
        );
    }

    #[test]
    fn anonymous_free_batch_has_no_probes() {
        let (plan, results) = plan_for(json!([{"type": "track", "messageId": "bad"}]), true);
        assert!(plan.best().is_none());
        assert!(plan.suppression_probe(&results).is_none());
        assert!(plan.assignments(&results).is_none());
        assert!(plan.profile_reads(&results).is_none());
    }

    #[test]
    fn settled_only_without_new_links_and_with_every_link_assigned() {
        let decoded = decoded(json!([
            {"type": "track", "event": "A", "anonymousId": "a1", "messageId": "m1"},
            {"type": "track", "event": "B", "anonymousId": "a2", "messageId": "m2"}
        ]));
        let events: Vec<&Event> = decoded.valid().collect();
        let graph = contributions(&events, "web", &Rules::default());
        let best = graph.links[1].identifiers[0].clone();
        let both: HashMap<String, Assigned> = HashMap::from([
            ("anonymous_id:a1".into(), assigned("p1", 1)),
            ("anonymous_id:a2".into(), assigned("p2", 1)),
        ]);
        let one: HashMap<String, Assigned> =
            HashMap::from([("anonymous_id:a2".into(), assigned("p2", 1))]);
        let none = HashMap::new();
        assert_eq!(
            settled_profiles(&graph.links, &best, false, &both, &none),
            Some((
                "p2".into(),
                vec![
                    ("web/m1".into(), "p1".into()),
                    ("web/m2".into(), "p2".into())
                ]
            ))
        );
        assert_eq!(
            settled_profiles(&graph.links, &best, true, &both, &none),
            None
        );
        assert_eq!(
            settled_profiles(&graph.links, &best, false, &one, &none),
            None
        );
    }

    fn assigned(profile: &str, seq: i64) -> Assigned {
        Assigned {
            profile_id: profile.into(),
            seq,
        }
    }

    #[test]
    fn a_link_in_two_profiles_that_no_resolution_saw_is_resolved_again() {
        // A sign-in whose links committed while its resolution never ran (the try failed):
        // its retry finds no new link, both identifiers assigned to two profiles, each from
        // links older than the sign-in's.
        let decoded = decoded(json!([
            {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"}
        ]));
        let events: Vec<&Event> = decoded.valid().collect();
        let graph = contributions(&events, "web", &Rules::default());
        let best = graph.links[0].identifiers[0].clone();
        let seqs = HashMap::from([(set_key(&graph.links[0]), 9)]);
        let apart = |seq| -> HashMap<String, Assigned> {
            HashMap::from([
                ("anonymous_id:a1".into(), assigned("p-a", seq)),
                ("user_id:u1".into(), assigned("p-u", seq)),
            ])
        };
        assert_eq!(
            settled_profiles(&graph.links, &best, false, &apart(5), &seqs),
            None
        );
        // A merge the rules refused: two profiles, but computed from the link.
        assert!(settled_profiles(&graph.links, &best, false, &apart(9), &seqs).is_some());
        let together = HashMap::from([
            ("anonymous_id:a1".into(), assigned("p-u", 5)),
            ("user_id:u1".into(), assigned("p-u", 5)),
        ]);
        assert!(settled_profiles(&graph.links, &best, false, &together, &seqs).is_some());
        // A browser new to a known user: the retry finds only the user assigned.
        let user_only = HashMap::from([("user_id:u1".into(), assigned("p-u", 5))]);
        assert_eq!(
            settled_profiles(&graph.links, &best, false, &user_only, &seqs),
            None
        );
        let user_only_since = HashMap::from([("user_id:u1".into(), assigned("p-u", 11))]);
        assert_eq!(
            settled_profiles(&graph.links, &best, false, &user_only_since, &seqs),
            None,
            "unassigned, even when a later link's resolution wrote the user (over shards it \
             can have read the link's database before the link landed)"
        );
        let probe = crate::identity::graph_plan::probe_assignments(
            graph.links.iter().flat_map(|l| &l.identifiers),
        );
        assert!(
            matches!(&probe.params[0], Param::Text(t) if t.contains("anonymous_id:a1") && t.contains("user_id:u1")),
            "the probe reads every identifier of the links"
        );
    }
}
