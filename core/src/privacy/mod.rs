//! Data-subject rights and consent records, as plans the edge executes.
//!
//! - **Suppression**: identifiers a person asked us to forget are kept only as salted-by-domain
//!   SHA-256 keys ([`suppression_key`]), never in clear, so the list itself holds no personal data.
//!   Events carrying one are rejected with code `suppressed` ([`apply_suppressions`]) and counted
//!   per day and reason ([`count_rejections`]).
//! - **Erasure**: [`erase`] plans the deletion of everything stored about a [`Subject`] (its
//!   identifiers and the profile IDs they held): events, identity links, assignments, traits,
//!   consent records, merge and conflict audit rows. Links shared with someone else's identifiers
//!   lose only the subject's identifiers, so other people's profiles are untouched.
//! - **Consent history**: each identifier's consent state is recorded when it changes
//!   ([`consent_records`], [`record_consent`]), with the source and the event that carried it.
//! - **Audit**: every privacy action is logged by admin key label ([`audit`]), naming the subject
//!   only by its suppression key.

pub mod access;
pub mod retention;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::archive;
use crate::archive::compact::{CLAIMED_CONTACTS, CLAIMED_DEVICE};
use crate::collect::event::{Event, EventError};
use crate::collect::ingest::{Decoded, Outcome};
use crate::identity::graph_plan::rows_without;
use crate::identity::spread::REDACTED_CLAIMED;
use crate::identity::{
    contact_value, identifiers_of, is_sha256_hex, mentioned_identifiers, pii_hash, sha256_hex,
    IdClass, IdType, Identifier, Rules,
};
use crate::plan::{multi_row, Param, Statement};

/// Domain separator for suppression keys, so they never equal another hash of the same text.
const SUPPRESSION_DOMAIN: &str = "seam-suppression\n";
/// Largest consent state recorded; anything bigger (a runaway TC string) is cut to its GCM part.
pub const MAX_CONSENT_BYTES: usize = 4096;

/// The key under which an identifier is suppressed.
pub fn suppression_key(identifier: &Identifier) -> String {
    sha256_hex(format!("{SUPPRESSION_DOMAIN}{identifier}").as_bytes())
}

/// The suppression keys of every identifier `decoded`'s valid events name, without repeats.
pub fn suppression_candidates(decoded: &Decoded, rules: &Rules) -> Vec<String> {
    let keys: BTreeSet<String> = decoded
        .valid()
        .flat_map(|e| mentioned_identifiers(e, rules))
        .map(|i| suppression_key(&i))
        .collect();
    keys.into_iter().collect()
}

/// Rejects every valid event that carries an identifier whose [`suppression_key`] is suppressed.
/// Returns the request with those events rejected (code `suppressed`) and how many there were.
pub fn apply_suppressions(
    mut decoded: Decoded,
    rules: &Rules,
    is_suppressed: impl Fn(&str) -> bool,
) -> (Decoded, usize) {
    let mut count = 0;
    for outcome in &mut decoded.outcomes {
        let Outcome::Valid(event) = outcome else {
            continue;
        };
        if mentioned_identifiers(event, rules)
            .iter()
            .any(|i| is_suppressed(&suppression_key(i)))
        {
            count += 1;
            *outcome = Outcome::Rejected {
                message_id: Some(event.message_id.clone()),
                error: EventError::Suppressed,
            };
        }
    }
    (decoded, count)
}

/// Adds this request's rejected events to the per-day counters (the UTC day of `received_at`),
/// by code. `None` when nothing was rejected (the common case costs no write).
pub fn count_rejections(source_id: &str, received_at: i64, decoded: &Decoded) -> Option<Statement> {
    let day = crate::format::time::format_iso8601(received_at);
    let day = day.get(..10).unwrap_or(&day);
    let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
    for outcome in &decoded.outcomes {
        if let Outcome::Rejected { error, .. } = outcome {
            *counts.entry(error.code()).or_default() += 1;
        }
    }
    let rows: Vec<Vec<Param>> = counts
        .into_iter()
        .map(|(code, n)| {
            vec![
                Param::Text(source_id.to_owned()),
                Param::Text(code.to_owned()),
                Param::Text(day.to_owned()),
                Param::Int(n),
            ]
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    multi_row(
        "INSERT INTO drop_counts (source_id, reason, day, count) VALUES ",
        " ON CONFLICT (source_id, reason, day) DO UPDATE SET count = count + excluded.count",
        rows,
        &[],
    )
    .into_iter()
    .next()
}

/// With [`Rules::hash_pii`], replaces emails and phones in event bodies (`traits` and
/// `context.traits`) by the same hashes the identity graph stores, so neither events nor trait
/// values keep them in clear. A value that is not one of its kind (a phone typed into the email
/// field, a misspelt address) is still personal: it is stored as `unusable:` and its hash in
/// the letters a-p (no digits, no `@`), which no later reading takes for an email or a phone.
/// Blocked placeholders ("n/a") stay as they are.
pub fn hash_pii_fields(mut decoded: Decoded, rules: &Rules) -> Decoded {
    if !rules.hash_pii {
        return decoded;
    }
    for outcome in &mut decoded.outcomes {
        let Outcome::Valid(event) = outcome else {
            continue;
        };
        hash_in(event.body.get_mut("traits"), rules);
        if let Some(context) = event.body.get_mut("context") {
            hash_in(context.get_mut("traits"), rules);
        }
    }
    decoded
}

const UNUSABLE: &str = "unusable:";

fn unusable(hex: &str) -> String {
    let letters = hex.bytes().map(|b| match b {
        b'0'..=b'9' => char::from(b'a' + (b - b'0')),
        _ => char::from(b'k' + (b.to_ascii_lowercase() - b'a')),
    });
    UNUSABLE.chars().chain(letters).collect()
}

fn hash_in(traits: Option<&mut Value>, rules: &Rules) {
    let Some(Value::Object(traits)) = traits else {
        return;
    };
    for (field, kind) in [("email", IdType::Email), ("phone", IdType::Phone)] {
        // Borrowed: this runs for every event of a hashPii deployment.
        let number;
        let raw = match traits.get(field) {
            Some(Value::String(raw)) => raw.as_str(),
            Some(Value::Number(n)) => {
                number = n.to_string();
                number.as_str()
            }
            _ => continue,
        };
        let stored = match Identifier::normalized(kind, raw, rules) {
            Some(id) => id.value,
            // Already unusable (an exported body imported again): hashing twice would hide it.
            None if raw.starts_with(UNUSABLE) => continue,
            None if raw.trim().is_empty() || rules.is_blocked(raw.trim()) => continue,
            // The hash of the value as a contact of the other kind (a phone in the email
            // field hashes as that phone): erasure finds it from the person's identifier.
            None => unusable(&pii_hash(
                &contact_value(raw).unwrap_or_else(|| raw.trim().to_owned()),
                rules,
            )),
        };
        traits.insert(field.into(), Value::String(stored));
    }
}

/// Everything that identifies one person: identifier text forms and every profile ID they held
/// (the current one and those it absorbed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// Identifier text forms (`email:jane@example.com`, `anonymous_id:a1`, ...).
    pub identifiers: BTreeSet<String>,
    /// Profile IDs.
    pub profile_ids: BTreeSet<String>,
}

impl Subject {
    /// The values events store in their `anonymous_id` column: anonymous and cookie IDs (the SDK
    /// adopts the cookie ID as its anonymous ID).
    pub fn anonymous_values(&self) -> BTreeSet<String> {
        self.values_of(&[IdClass::AnonymousId, IdClass::CookieId])
    }

    /// The values events store in their `user_id` column.
    pub fn user_values(&self) -> BTreeSet<String> {
        self.values_of(&[IdClass::UserId])
    }

    /// The person's emails and phones (normalised, or hashed under `hashPii`): what other
    /// people's events may still name in their traits. Under `hashPii` a hashed one may also
    /// be there in its unusable form, typed into the other kind's field
    /// ([`hash_pii_fields`]).
    pub fn contact_values(&self) -> BTreeSet<String> {
        let values = self.values_of(&[IdClass::Email, IdClass::Phone]);
        let unusable_forms: Vec<String> = values
            .iter()
            .filter(|v| is_sha256_hex(v))
            .map(|hash| unusable(hash))
            .collect();
        values.into_iter().chain(unusable_forms).collect()
    }

    /// The values of the subject's identifiers of `classes`.
    pub fn values_of(&self, classes: &[IdClass]) -> BTreeSet<String> {
        self.identifiers
            .iter()
            .filter_map(|t| Identifier::parse(t))
            .filter(|i| classes.contains(&i.class()))
            .map(|i| i.value)
            .collect()
    }

    /// Suppression keys of every identifier, with the identifier's class (kept for counting).
    pub fn suppression_keys(&self) -> Vec<(String, &'static str)> {
        self.identifiers
            .iter()
            .filter_map(|t| Identifier::parse(t))
            .map(|i| (suppression_key(&i), i.class().as_str()))
            .collect()
    }

    /// KV keys holding copies of this person: profile snapshots and anonymous-ID pointers.
    pub fn kv_keys(&self) -> Vec<String> {
        let profiles = self.profile_ids.iter().map(|p| format!("profile:{p}"));
        let anonymous = self
            .anonymous_values()
            .into_iter()
            .map(|a| format!("anon:{a}"));
        profiles.chain(anonymous).collect()
    }
}

fn json_list<'a>(items: impl IntoIterator<Item = &'a String>) -> Param {
    let items: Vec<&String> = items.into_iter().collect();
    Param::Text(serde_json::to_string(&items).unwrap_or_else(|_| "[]".into()))
}

const IN_IDS: &str = "(SELECT value FROM json_each(?1))";

/// The profiles holding the subject's identifiers (`?1`) as `DB`'s assignments say, and the
/// subject's profile IDs (`?2`).
const HOLDERS: &str = "SELECT profile_id FROM identities WHERE identifier IN \
    (SELECT value FROM json_each(?1)) UNION SELECT value FROM json_each(?2)";

/// An event's device ID as erasure matches it (`archive::compact::device_form`): the
/// expression migration 0028 indexes.
fn device_value() -> String {
    trimmed(&format!("json_extract(body, '{CLAIMED_DEVICE}')"))
}

/// Prefix of a statement over a person's events: `mine(source_id, message_id, timestamp)`, in
/// every source that has events, configured (bound as `?1`, a JSON array) or since deleted (the
/// distinct `source_id`s, read by seeking the events index once per source). Anonymous IDs are
/// `?2` and user IDs `?3`. Each kind of ID is sought in its own index per source: with the two
/// in one `OR`, SQLite reads every event of the source (700 ms at a million events).
pub const WITH_PERSON_EVENTS: &str = "WITH RECURSIVE seen(id) AS ( \
    SELECT (SELECT min(source_id) FROM events) \
    UNION ALL SELECT (SELECT min(source_id) FROM events WHERE source_id > seen.id) \
    FROM seen WHERE seen.id IS NOT NULL), \
    src(id) AS (SELECT value FROM json_each(?1) UNION SELECT id FROM seen WHERE id IS NOT NULL), \
    mine(source_id, message_id, timestamp) AS ( \
    SELECT e.source_id, e.message_id, e.timestamp FROM src CROSS JOIN events e \
    ON e.source_id = src.id WHERE e.anonymous_id IN (SELECT value FROM json_each(?2)) \
    UNION SELECT e.source_id, e.message_id, e.timestamp FROM src CROSS JOIN events e \
    ON e.source_id = src.id WHERE e.user_id IN (SELECT value FROM json_each(?3))) ";

/// Deletes what a profile shard (`personalise::shard`) holds of `profile_ids`: state rows,
/// segment memberships and co-occurrence evidence, as `(what, statement)` pairs like
/// [`erase`]'s. `DB` runs it too, for every profile of the subject (shard 0, and evidence
/// written there before it moved to the shards).
pub fn erase_state<'a>(
    profile_ids: impl IntoIterator<Item = &'a String>,
) -> Vec<(&'static str, Statement)> {
    let profiles = json_list(profile_ids);
    let delete = |what: &'static str, table: &str| {
        (
            what,
            Statement {
                sql: format!(
                    "DELETE FROM {table} WHERE profile_id IN (SELECT value FROM json_each(?1))"
                ),
                params: vec![profiles.clone()],
            },
        )
    };
    vec![
        delete("personalisation", "profile_personalisation"),
        delete("segmentMemberships", "segment_memberships"),
        // Deleting evidence rows fires triggers that take the person's co-occurrence
        // contribution back out of item_stats and item_pairs. D1 counts trigger writes as
        // changes, so these return their rows to be counted exactly.
        returning(delete("itemInteractions", "item_interactions")),
        returning(delete("itemPairEvidence", "item_pair_evidence")),
    ]
}

/// Deletes everything stored about `subject` in the shared database, as `(what, statement)`
/// pairs whose row counts make the receipt ([`erase_state`], run in every shard that may
/// hold the subject's profiles, `DB` included, is the rest). `source_ids` are every source events may have been stored under (events are keyed
/// by source first, so the delete uses their indexes). Run as one batch: all or nothing.
pub fn erase(
    subject: &Subject,
    source_ids: &[String],
    now_ms: i64,
) -> Vec<(&'static str, Statement)> {
    plan_erasure(subject, source_ids, OthersEvents::Redact, now_ms)
}

/// [`erase`] for retention: the person's own data goes, and other people's events keep the
/// contacts and device IDs they name, to expire on their own schedule (a retention is not a
/// request to forget the person, and must not change data of people still active).
pub fn expire(
    subject: &Subject,
    source_ids: &[String],
    now_ms: i64,
) -> Vec<(&'static str, Statement)> {
    plan_erasure(subject, source_ids, OthersEvents::Keep, now_ms)
}

/// The archive's person keys an erasure of `subject` takes out of the index: its IDs, and when
/// it takes them out of other people's events too (`redacting`, a deletion asked for, not
/// retention), its contacts and device IDs.
pub fn archive_people(subject: &Subject, redacting: bool) -> Vec<i64> {
    let (contacts, devices) = if redacting {
        (
            subject.contact_values(),
            subject.values_of(&[IdClass::DeviceId]),
        )
    } else {
        (BTreeSet::new(), BTreeSet::new())
    };
    archive::compact::subject_people(
        &subject.anonymous_values(),
        &subject.user_values(),
        &contacts,
        &devices,
    )
}

/// Whether an erasure takes the person's contacts and device IDs out of other people's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OthersEvents {
    Redact,
    Keep,
}

fn plan_erasure(
    subject: &Subject,
    source_ids: &[String],
    others: OthersEvents,
    now_ms: i64,
) -> Vec<(&'static str, Statement)> {
    let ids = json_list(&subject.identifiers);
    let by_ids = |what: &'static str, sql: String| {
        (
            what,
            Statement {
                sql,
                params: vec![ids.clone()],
            },
        )
    };
    let profiles = json_list(&subject.profile_ids);
    let by_profiles = |what: &'static str, table: &str| {
        (
            what,
            Statement {
                sql: format!(
                    "DELETE FROM {table} WHERE profile_id IN (SELECT value FROM json_each(?1))"
                ),
                params: vec![profiles.clone()],
            },
        )
    };
    let profile_row_edits = profile_rows_erased(&ids, &profiles);
    let contacts = json_list(&subject.contact_values());
    // Someone else's events may name the person's email or phone as a claim (a browser cannot
    // prove one): those fields go too, found through an index per field (migration 0028) on
    // the value normalised as a contact (`contact`), whichever field it was typed into.
    // Before each change to events, the archive's objects holding them are noted for rebuilding
    // (core::archive): the archive forgets what D1 forgets.
    // The field at `path` taken out of the events where `value` (an expression over it, as
    // its index has it) is one of `list`.
    let redact_field = |path: &str, value: &str, list: &Param| {
        let selection = format!(
            "FROM events WHERE json_extract(body, '{path}') IS NOT NULL \
             AND {value} IN (SELECT value FROM json_each(?1))"
        );
        [
            (
                "archiveObjects",
                archive::note_rewrites("", &selection, vec![list.clone()], now_ms),
            ),
            (
                "redactedClaims",
                Statement {
                    sql: format!(
                        "UPDATE events SET body = json_remove(body, '{path}') {}",
                        selection.trim_start_matches("FROM events ")
                    ),
                    params: vec![list.clone()],
                },
            ),
        ]
    };
    let redact = |path: &str| {
        redact_field(
            path,
            &contact(&format!("json_extract(body, '{path}')")),
            &contacts,
        )
    };
    let person = vec![
        json_list(source_ids),
        json_list(&subject.anonymous_values()),
        json_list(&subject.user_values()),
    ];
    let theirs =
        "FROM events WHERE (source_id, message_id) IN (SELECT source_id, message_id FROM mine)";
    let mut plan = vec![
        (
            "archiveObjects",
            archive::note_rewrites(WITH_PERSON_EVENTS, theirs, person.clone(), now_ms),
        ),
        (
            "events",
            Statement {
                sql: format!("{WITH_PERSON_EVENTS}DELETE {theirs}"),
                params: person,
            },
        ),

        by_ids(
            "traits",
            format!("DELETE FROM trait_values WHERE identifier IN {IN_IDS}"),
        ),
        by_ids(
            "consentRecords",
            format!("DELETE FROM consent_history WHERE identifier IN {IN_IDS}"),
        ),
        // Links made only of the subject's identifiers go; links shared with others keep the
        // others' identifiers, so no one else's profile changes. Who else a link names is read
        // from its own JSON (the same set as its member rows): members have no index by link.
        // Both return their set keys: with profile shards a link has copies, counted once
        // (`identity::spread::erase` finds the copies in the other databases).
        by_ids(
            "identityLinks",
            format!(
                "DELETE FROM identity_links WHERE set_key IN \
                 (SELECT set_key FROM link_members WHERE identifier IN {IN_IDS}) \
                 AND NOT EXISTS (SELECT 1 FROM json_each(identity_links.identifiers) j \
                 WHERE j.value NOT IN {IN_IDS}) RETURNING set_key"
            ),
        ),
        by_ids(
            "sharedLinksRedacted",
            format!(
                "UPDATE identity_links SET identifiers = (SELECT json_group_array(value) FROM \
                 json_each(identity_links.identifiers) WHERE value NOT IN {IN_IDS}), \
                 claimed = {REDACTED_CLAIMED} \
                 WHERE set_key IN (SELECT set_key FROM link_members WHERE identifier IN {IN_IDS}) \
                 RETURNING set_key"
            ),
        ),
        by_ids(
            "linkMembers",
            format!("DELETE FROM link_members WHERE identifier IN {IN_IDS}"),
        ),
        // The rows of the profiles holding them go, or lose them (each row counted once):
        // found through the assignments in `DB`, so before those go, and by the subject's
        // profile IDs (with profile shards an identifier's assignment lives in its own
        // shard: the edge adds the profiles those name, `profile_rows_erased`). (An
        // assignment from a Worker before migration 0030 had a trigger doing the same.)
        profile_row_edits[0].clone(),
        profile_row_edits[1].clone(),
        returning(by_ids(
            "identities",
            format!("DELETE FROM identities WHERE identifier IN {IN_IDS}"),
        )),
        // A walk's saved position (`walk_cursors`, a few rows) is the last key it read: one of
        // the person's identifiers or profile IDs steps back to the one before it (a walk
        // re-reads from there, never skips).
        (
            "walkPositions",
            Statement {
                sql: format!(
                    "UPDATE walk_cursors SET after = CASE WHEN after IN {IN_IDS} \
                     THEN coalesce((SELECT max(identifier) FROM identities \
                     WHERE identifier < walk_cursors.after), '') \
                     ELSE coalesce((SELECT max(profile_id) FROM profile_members \
                     WHERE profile_id < walk_cursors.after), '') END \
                     WHERE after IN {IN_IDS} OR after IN (SELECT value FROM json_each(?2))"
                ),
                params: vec![ids.clone(), profiles.clone()],
            },
        ),
        (
            "merges",
            Statement {
                sql: "DELETE FROM merges WHERE from_profile IN (SELECT value FROM json_each(?1)) \
                      OR into_profile IN (SELECT value FROM json_each(?1))"
                    .into(),
                params: vec![profiles.clone()],
            },
        ),
        // Journey messages not yet sent are not sent, and no rendered message is kept (it
        // names the person's address); then their journeys end by going.
        (
            "journeyMessages",
            Statement {
                sql: "UPDATE deliveries SET payload = NULL, status = CASE WHEN status IN \
                      ('pending', 'sending', 'dead') THEN 'skipped' ELSE status END, \
                      last_error = CASE WHEN status IN ('pending', 'sending', 'dead') \
                      THEN 'event_erased' ELSE last_error END \
                      WHERE source_id = '$journey' AND message_id IN (SELECT key FROM \
                      journey_decisions WHERE profile_id IN (SELECT value FROM json_each(?1)))"
                    .into(),
                params: vec![profiles.clone()],
            },
        ),
        by_profiles("journeyDecisions", "journey_decisions"),
        by_profiles("journeyRuns", "journey_runs"),
        (
            "refusedMerges",
            Statement {
                sql: "DELETE FROM identity_conflicts WHERE profile_id IN (SELECT value FROM json_each(?1)) \
                      OR refused_profile IN (SELECT value FROM json_each(?1)) \
                      OR refused IN (SELECT value FROM json_each(?2))"
                    .into(),
                params: vec![profiles, ids],
            },
        ),
    ];
    let redacting = others == OthersEvents::Redact;
    if redacting && !subject.contact_values().is_empty() {
        plan.extend(CLAIMED_CONTACTS.iter().flat_map(|path| redact(path)));
        plan.extend([(
            "redactedClaims",
            Statement {
                // Through the partial index of migration 0028, on the value normalised
                // as `contact` (as the events' claims are).
                sql: format!(
                    "DELETE FROM trait_values WHERE key IN ('email', 'phone') AND {} IN \
                         (SELECT value FROM json_each(?1))",
                    contact("json_extract(value, '$')")
                ),
                params: vec![contacts.clone()],
            },
        )]);
    }
    let devices = if redacting {
        subject.values_of(&[IdClass::DeviceId])
    } else {
        BTreeSet::new()
    };
    if !devices.is_empty() {
        // Someone else's event may name the person's device ID, a claim from a browser: it
        // goes too, found through migration 0028's index on the value as `device_form` has it.
        plan.extend(redact_field(
            CLAIMED_DEVICE,
            &device_value(),
            &json_list(&devices),
        ));
    }
    // Events only the archive holds now: found through its index, tombstoned, rebuilt.
    let people = archive_people(subject, redacting);
    plan.extend(archive::compact::erase(&people, now_ms));
    let users = subject.user_values();
    if redacting && !users.is_empty() {
        // Browsers that claimed the person's user ID keep it as a trait (`claimedUserId`).
        plan.push((
            "redactedClaims",
            Statement {
                sql: format!(
                    "DELETE FROM trait_values WHERE key = 'claimedUserId' \
                     AND {} IN (SELECT value FROM json_each(?1))",
                    trimmed("json_extract(value, '$')")
                ),
                params: vec![json_list(&users)],
            },
        ));
    }
    plan
}

/// Unicode's White_Space characters as SQL `char()` arguments: identity normalisation trims
/// them all (`str::trim`), SQL's one-argument `trim()` only spaces, so a claim padded with a
/// tab or a no-break space would escape erasure.
const WHITE_SPACE: &str = "char(9, 10, 11, 12, 13, 32, 133, 160, 5760, 8192, 8193, 8194, 8195, \
     8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288)";

/// SQL for a stored value as text, trimmed as identity normalisation trims it.
fn trimmed(expr: &str) -> String {
    format!("trim(CAST({expr} AS TEXT), {WHITE_SPACE})")
}

/// SQL for a stored email as the identity graph normalises one: trimmed and lower-cased
/// (SQL's `lower()` takes ASCII letters only; the archive's `contact_forms` take all).
fn plain(expr: &str) -> String {
    format!("lower({})", trimmed(expr))
}

/// Characters people and forms put between a phone's digits. The identity graph keeps only a
/// leading `+` and the digits; SQL has no pattern replace, so these are taken out one by one
/// (a phone with letters or other marks in it is found in the archive, not in D1's events).
const PHONE_MARKS: [char; 11] = [
    ' ', '-', '(', ')', '.', '/', '\t', '\u{a0}', '\u{2011}', '\u{2013}', '\u{202f}',
];

/// SQL for a stored phone without the marks between its digits ([`PHONE_MARKS`]), as the
/// identity graph keeps phones.
fn digits(expr: &str) -> String {
    PHONE_MARKS.iter().fold(trimmed(expr), |sql, mark| {
        format!("replace({sql}, char({}), '')", u32::from(*mark))
    })
}

/// A claimed email or phone as SQL's [`contact`] has it (its trim is `str::trim`: a test
/// checks [`WHITE_SPACE`]): the archive indexes this form beside the identity graph's, so
/// what D1 finds in an event the archive finds in its line.
pub fn sql_contact_form(text: &str) -> String {
    let trimmed = text.trim();
    let kept: String = if trimmed.contains('@') {
        trimmed.into()
    } else {
        trimmed
            .chars()
            .filter(|c| !PHONE_MARKS.contains(c))
            .collect()
    };
    kept.to_ascii_lowercase()
}

/// SQL for a stored contact as the identity graph normalises it: with an `@`, an email
/// ([`plain`]); else a phone ([`digits`], lower-cased for hashed values).
fn contact(expr: &str) -> String {
    format!(
        "CASE WHEN instr(CAST({expr} AS TEXT), '@') > 0 THEN {} ELSE lower({}) END",
        plain(expr),
        digits(expr)
    )
}

/// The rows of the profiles holding the subject's identifiers (`ids`, a JSON array): those
/// `DB`'s assignments name and `profiles` (a JSON array) go when nothing else is left in
/// them, the others lose the subject's identifiers. Each row changed is counted once.
pub fn profile_rows_erased(ids: &Param, profiles: &Param) -> [(&'static str, Statement); 2] {
    let statement = |sql: String| Statement {
        sql,
        params: vec![ids.clone(), profiles.clone()],
    };
    [
        returning((
            "profileRows",
            statement(format!(
                "DELETE FROM profile_members WHERE profile_id IN ({HOLDERS}) AND NOT EXISTS \
                 (SELECT 1 FROM json_each(profile_members.identifiers) WHERE value NOT IN {IN_IDS})"
            )),
        )),
        returning((
            "profileRows",
            statement(format!(
                "UPDATE profile_members SET {} WHERE profile_id IN ({HOLDERS}) AND EXISTS \
                 (SELECT 1 FROM json_each(profile_members.identifiers) WHERE value IN {IN_IDS})",
                rows_without(IN_IDS)
            )),
        )),
    ]
}

fn returning((what, mut statement): (&'static str, Statement)) -> (&'static str, Statement) {
    statement.sql.push_str(" RETURNING 1 AS one");
    (what, statement)
}

/// Adds suppression keys (`(key, identifier class)`); already suppressed keys are kept as they are.
pub fn suppress(keys: &[(String, &'static str)], request_id: &str, now_ms: i64) -> Vec<Statement> {
    let rows = keys
        .iter()
        .map(|(key, class)| {
            vec![
                Param::Text(key.clone()),
                Param::Text((*class).to_owned()),
                Param::Int(now_ms),
                Param::Text(request_id.to_owned()),
            ]
        })
        .collect();
    multi_row(
        "INSERT INTO suppressions (key, id_class, created_at, request_id) VALUES ",
        " ON CONFLICT (key) DO NOTHING",
        rows,
        &[],
    )
}

/// A read for the ingest batch: which of `keys` are suppressed at commit time.
pub fn suppression_probe(keys: &[String]) -> Statement {
    Statement {
        sql: "SELECT key FROM suppressions WHERE key IN (SELECT value FROM json_each(?1))".into(),
        params: vec![json_list(keys)],
    }
}

/// Lifts the suppression of `keys`.
pub fn unsuppress(keys: &[String]) -> Statement {
    Statement {
        sql: "DELETE FROM suppressions WHERE key IN (SELECT value FROM json_each(?1))".into(),
        params: vec![json_list(keys)],
    }
}

/// One privacy action for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// The receipt's request ID.
    pub request_id: String,
    /// `delete`, `suppress`, `unsuppress`, `export`, `issue_key`, `revoke_key`, `retention`.
    pub action: &'static str,
    /// Label of the admin key that acted (`root`, `scheduler`, or an issued key's label).
    pub actor: String,
    /// The subject's [`suppression_key`] (never the identifier in clear), when there is one.
    pub subject: Option<String>,
    /// What was done: counts, scopes... never personal data.
    pub detail: Value,
    /// When (epoch ms).
    pub at_ms: i64,
}

/// Appends `entry` to the audit log.
pub fn audit(entry: &AuditEntry) -> Statement {
    Statement {
        sql: "INSERT INTO privacy_audit (request_id, action, actor, subject, detail, at) \
              VALUES (?, ?, ?, ?, ?, ?)"
            .into(),
        params: vec![
            Param::Text(entry.request_id.clone()),
            Param::Text(entry.action.to_owned()),
            Param::Text(entry.actor.clone()),
            Param::from(entry.subject.as_ref()),
            Param::Text(entry.detail.to_string()),
            Param::Int(entry.at_ms),
        ],
    }
}

/// The newest recorded consent state of each of `identifiers` (text forms): rows of
/// `identifier, state, timestamp`. Server-made events carry it, so a destination gets a
/// segment transition only when the person's own consent allows it.
pub fn latest_consent(identifiers: &[String]) -> crate::plan::Statement {
    let ids = &identifiers[..identifiers.len().min(crate::plan::MAX_BOUND_PARAMS)];
    crate::plan::Statement {
        // SQLite returns the other columns of the row that holds MAX(timestamp).
        sql: format!(
            "SELECT identifier, state, MAX(timestamp) AS timestamp FROM consent_history \
             WHERE identifier IN ({}) GROUP BY identifier",
            (1..=ids.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        params: ids
            .iter()
            .map(|id| crate::plan::Param::Text(id.clone()))
            .collect(),
    }
}

/// A consent state some identifier's event carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The event's best identifier (text form).
    pub identifier: String,
    /// Event time.
    pub timestamp_ms: i64,
    /// `<source>/<messageId>` of the event.
    pub message_key: String,
    /// Source that received it.
    pub source_id: String,
    /// Canonical JSON of the state (`gcm`, `categoryPreferences`, `tcString`, `gpc`).
    pub state: String,
}

/// The canonical consent state of an event: its `context.consent` object (keys sorted), plus
/// `gpc: true` when the request said so. `None` when the event carries no consent.
pub fn consent_state(event: &Event, gpc: bool) -> Option<String> {
    let consent = event
        .body
        .get("context")
        .and_then(|c| c.get("consent"))
        .and_then(Value::as_object);
    let mut state: Map<String, Value> = consent.cloned().unwrap_or_default();
    if gpc {
        state.insert("gpc".into(), Value::Bool(true));
    }
    if state.is_empty() {
        return None;
    }
    let text = Value::Object(state.clone()).to_string();
    if text.len() <= MAX_CONSENT_BYTES {
        return Some(text);
    }
    // Keep what decides processing; a huge free-form TC string or vendor list is not worth it.
    state.retain(|k, _| matches!(k.as_str(), "gcm" | "categoryPreferences" | "gpc"));
    let text = Value::Object(state).to_string();
    (text.len() <= MAX_CONSENT_BYTES).then_some(text)
}

/// Consent records of `events` (read before consent policies strip identifiers: a withdrawal is
/// exactly what must be on record). Per identifier, consecutive events with the same state make
/// one record.
pub fn consent_records(
    events: &[&Event],
    source_id: &str,
    rules: &Rules,
    gpc: bool,
    at_receipt: bool,
) -> Vec<ConsentRecord> {
    let mut records: Vec<ConsentRecord> = events
        .iter()
        .enumerate()
        .filter_map(|(at, event)| {
            let state = consent_state(event, gpc)?;
            let best = identifiers_of(event, rules).into_iter().next()?;
            // A browser's clock is a claim: its consent changes are history from when they
            // arrived (a millisecond apart per event, so a batch keeps its order).
            let timestamp_ms = if at_receipt {
                event.received_at_ms.saturating_add(at as i64)
            } else {
                event.timestamp_ms
            };
            Some(ConsentRecord {
                identifier: best.to_string(),
                timestamp_ms,
                message_key: format!("{source_id}/{}", event.message_id),
                source_id: source_id.to_owned(),
                state,
            })
        })
        .collect();
    records.sort_by(|a, b| {
        (&a.identifier, a.timestamp_ms, &a.message_key).cmp(&(
            &b.identifier,
            b.timestamp_ms,
            &b.message_key,
        ))
    });
    records.dedup_by(|later, earlier| {
        later.identifier == earlier.identifier && later.state == earlier.state
    });
    records
}

/// Inserts each record unless the identifier's latest earlier record has the same state, so the
/// history holds changes, not every event.
pub fn record_consent(records: &[ConsentRecord]) -> Vec<Statement> {
    records
        .iter()
        .flat_map(|r| {
            [
                Statement {
                    sql: "INSERT INTO consent_history (identifier, timestamp, message_key, source_id, state) \
                          SELECT ?1, ?2, ?3, ?4, ?5 WHERE coalesce((SELECT state FROM consent_history \
                          WHERE identifier = ?1 AND timestamp <= ?2 ORDER BY timestamp DESC LIMIT 1), '') <> ?5 \
                          ON CONFLICT DO NOTHING"
                        .into(),
                    params: vec![
                        Param::Text(r.identifier.clone()),
                        Param::Int(r.timestamp_ms),
                        Param::Text(r.message_key.clone()),
                        Param::Text(r.source_id.clone()),
                        Param::Text(r.state.clone()),
                    ],
                },
                // The console's consent rates: each choice recorded just now (the statement
                // above changed a row) counts once per Consent Mode purpose, by its day.
                Statement {
                    sql: "INSERT INTO consent_counts (day, purpose, value, count) \
                          SELECT ?1, key, value, 1 FROM json_each(json_extract(?2, '$.gcm')) \
                          WHERE changes() > 0 AND type = 'text' \
                          ON CONFLICT (day, purpose, value) DO UPDATE SET count = count + 1"
                        .into(),
                    params: vec![
                        Param::Int(r.timestamp_ms.div_euclid(crate::format::time::DAY_MS)),
                        Param::Text(r.state.clone()),
                    ],
                },
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::{validate, Envelope, EventType};
    use crate::identity::IdType;
    use serde_json::json;

    fn event(raw: Value) -> Event {
        let envelope = Envelope {
            received_at_ms: 1_767_225_600_000,
            ..Envelope::default()
        };
        validate(raw, 0, &envelope, || "gen".to_owned()).unwrap()
    }

    fn decoded(events: Vec<Event>) -> Decoded {
        Decoded {
            write_key: None,
            outcomes: events.into_iter().map(Outcome::Valid).collect(),
        }
    }

    fn email(value: &str) -> Identifier {
        Identifier::normalized(IdType::Email, value, &Rules::default()).unwrap()
    }

    #[test]
    fn claim_redaction_reads_the_indexes_the_migration_builds() {
        let migration = include_str!("../../../edge/migrations/0028_claims_trimmed.sql");
        let subject = Subject {
            identifiers: ["email:ann@example.com".to_string()].into(),
            ..Subject::default()
        };
        let redactions: Vec<Statement> = erase(&subject, &[], 0)
            .into_iter()
            .filter(|(what, s)| *what == "redactedClaims" && s.sql.starts_with("UPDATE events"))
            .map(|(_, s)| s)
            .collect();
        assert_eq!(redactions.len(), CLAIMED_CONTACTS.len());
        for (path, statement) in CLAIMED_CONTACTS.iter().zip(&redactions) {
            let field = format!("json_extract(body, '{path}')");
            let normalised = contact(&field);
            assert!(
                migration.contains(&format!(
                    "ON events ({normalised})\n  WHERE {field} IS NOT NULL;"
                )),
                "no index for {path}"
            );
            assert!(statement
                .sql
                .contains(&format!("WHERE {field} IS NOT NULL AND {normalised} IN")));
        }
    }

    #[test]
    fn sql_trims_every_character_identity_normalisation_trims() {
        let listed: Vec<u32> = WHITE_SPACE
            .trim_start_matches("char(")
            .trim_end_matches(')')
            .split(", ")
            .map(|n| n.parse().unwrap())
            .collect();
        let trimmed_by_rust: Vec<u32> = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .map(u32::from)
            .collect();
        assert_eq!(listed, trimmed_by_rust);
    }

    #[test]
    fn device_redaction_reads_the_index_the_migration_builds_and_reaches_the_archive() {
        let migration = include_str!("../../../edge/migrations/0028_claims_trimmed.sql");
        assert!(migration.contains(&format!(
            "ON events ({})\n  WHERE json_extract(body, '{CLAIMED_DEVICE}') IS NOT NULL;",
            device_value()
        )));
        let subject = Subject {
            identifiers: ["device_id:dev-9".to_string(), "user_id:u1".to_string()].into(),
            ..Subject::default()
        };
        let plan = erase(&subject, &[], 0);
        let update = plan
            .iter()
            .find(|(what, s)| *what == "redactedClaims" && s.sql.contains(CLAIMED_DEVICE))
            .map(|(_, s)| s)
            .expect("the device ID is redacted in others' events");
        assert!(update.sql.starts_with(&format!(
            "UPDATE events SET body = json_remove(body, '{CLAIMED_DEVICE}') WHERE json_extract(body, '{CLAIMED_DEVICE}') IS NOT NULL AND {} IN",
            device_value()
        )));
        assert_eq!(update.params, vec![Param::Text(r#"["dev-9"]"#.into())]);
        let tombstones = plan
            .iter()
            .find(|(what, _)| *what == "archiveTombstones")
            .map(|(_, s)| s)
            .unwrap();
        let device = archive::compact::person_key(archive::compact::Named::Device, "dev-9");
        assert!(
            matches!(&tombstones.params[0], Param::Text(t) if t.contains(&device.to_string())),
            "the archive's tombstones name the device"
        );
        let without = Subject {
            identifiers: ["user_id:u1".to_string()].into(),
            ..Subject::default()
        };
        assert!(!erase(&without, &[], 0)
            .iter()
            .any(|(_, s)| s.sql.contains(CLAIMED_DEVICE)));
    }

    #[test]
    fn retention_keeps_what_other_peoples_events_name() {
        let subject = subject();
        let kept = expire(&subject, &[], 0);
        assert!(
            !kept.iter().any(|(what, _)| *what == "redactedClaims"),
            "no claim in someone else's event or trait changes"
        );
        let tombstones = kept
            .iter()
            .find(|(what, _)| *what == "archiveTombstones")
            .map(|(_, s)| s)
            .unwrap();
        let people: Vec<i64> = match &tombstones.params[0] {
            Param::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            people.len(),
            3,
            "the person's own IDs: anonymous, cookie and user"
        );
        let erased: Vec<&str> = erase(&subject, &[], 0).iter().map(|(w, _)| *w).collect();
        let expired: Vec<&str> = kept.iter().map(|(w, _)| *w).collect();
        assert_eq!(
            erased
                .iter()
                .filter(|w| **w != "redactedClaims" && **w != "archiveObjects")
                .collect::<Vec<_>>(),
            expired
                .iter()
                .filter(|w| **w != "archiveObjects")
                .collect::<Vec<_>>(),
            "the person's own rows go the same way"
        );
    }

    #[test]
    fn erasure_finds_claimed_traits_and_refused_merges_through_the_indexes_the_migration_builds() {
        let migration = include_str!("../../../edge/migrations/0025_erasure_seeks.sql");
        let subject = Subject {
            identifiers: [
                "email:ann@example.com".to_string(),
                "user_id:u1".to_string(),
            ]
            .into(),
            profile_ids: ["p1".to_string()].into(),
        };
        let plan = erase(&subject, &[], 0);
        let sql = |prefix: &str| {
            plan.iter()
                .find(|(_, s)| s.sql.starts_with(prefix))
                .map(|(_, s)| s.sql.clone())
                .unwrap_or_else(|| panic!("no statement starting {prefix}"))
        };
        let value = "json_extract(value, '$')";
        let contacts = sql("DELETE FROM trait_values WHERE key IN ('email', 'phone')");
        let claims = include_str!("../../../edge/migrations/0028_claims_trimmed.sql");
        assert!(claims.contains(&format!(
            "ON trait_values ({})\n  WHERE key IN ('email', 'phone');",
            contact(value)
        )));
        assert!(contacts.contains(&format!("AND {} IN", contact(value))));
        let users = sql("DELETE FROM trait_values WHERE key = 'claimedUserId'");
        let claimed_user = trimmed(value);
        assert!(claims.contains(&format!(
            "ON trait_values ({claimed_user})\n  WHERE key = 'claimedUserId';"
        )));
        assert!(users.contains(&format!("AND {claimed_user} IN")));
        let refused = sql("DELETE FROM identity_conflicts");
        for column in ["profile_id", "refused_profile", "refused"] {
            assert!(refused.contains(&format!("{column} IN")));
        }
        assert!(migration.contains("ON identity_conflicts (refused_profile);"));
        assert!(migration.contains("ON identity_conflicts (refused);"));
        let state = erase_state(&subject.profile_ids);
        let evidence = state
            .iter()
            .find(|(_, s)| {
                s.sql
                    .starts_with("DELETE FROM item_pair_evidence WHERE profile_id IN")
            })
            .map(|(_, s)| &s.sql);
        assert!(evidence.is_some_and(|sql| sql.contains("RETURNING")));
        assert!(migration.contains("PRIMARY KEY (profile_id, kind, item_a, item_b)"));
    }

    #[test]
    fn suppression_keys_hide_the_identifier_and_follow_normalisation() {
        let key = suppression_key(&email(" Jane@Example.com "));
        assert_eq!(key, suppression_key(&email("jane@example.com")));
        assert_eq!(key.len(), 64);
        assert!(!key.contains("jane"));
        assert_ne!(
            key,
            sha256_hex(b"email:jane@example.com"),
            "domain-separated"
        );
    }

    #[test]
    fn rejects_only_events_carrying_a_suppressed_identifier() {
        let suppressed = suppression_key(&email("jane@example.com"));
        let request = decoded(vec![
            event(
                json!({"type": "identify", "messageId": "m1", "anonymousId": "a-new",
                         "traits": {"email": "JANE@example.com"}}),
            ),
            event(
                json!({"type": "track", "messageId": "m2", "anonymousId": "a-other", "event": "X"}),
            ),
        ]);
        let (out, count) = apply_suppressions(request, &Rules::default(), |k| k == suppressed);
        assert_eq!(count, 1);
        assert!(matches!(&out.outcomes[0],
            Outcome::Rejected { message_id: Some(m), error: EventError::Suppressed } if m == "m1"));
        assert!(matches!(&out.outcomes[1], Outcome::Valid(_)));
    }

    const JAN_1_2026_MS: i64 = 1_767_225_600_000;

    #[test]
    fn counts_rejections_per_code_and_writes_nothing_without_any() {
        let mut request = decoded(vec![event(
            json!({"type": "track", "messageId": "m1", "anonymousId": "a", "event": "X"}),
        )]);
        assert_eq!(count_rejections("s", JAN_1_2026_MS, &request), None);
        for (i, error) in [
            EventError::Suppressed,
            EventError::Suppressed,
            EventError::MissingId,
        ]
        .into_iter()
        .enumerate()
        {
            request.outcomes.push(Outcome::Rejected {
                message_id: Some(format!("r{i}")),
                error,
            });
        }
        let statement = count_rejections("s", JAN_1_2026_MS, &request).unwrap();
        assert!(statement.sql.contains("count = count + excluded.count"));
        let text = |i: usize| statement.params[i].clone();
        assert_eq!(
            (text(1), text(3), text(5), text(7)),
            (
                Param::Text("missing_id".into()),
                Param::Int(1),
                Param::Text("suppressed".into()),
                Param::Int(2)
            )
        );
    }

    fn subject() -> Subject {
        Subject {
            identifiers: [
                "email:jane@example.com",
                "user_id:u1",
                "anonymous_id:a1",
                "cookie_id:c1",
                "device_id:d1",
            ]
            .map(String::from)
            .into(),
            profile_ids: ["prof_new", "prof_old"].map(String::from).into(),
        }
    }

    #[test]
    fn state_erasure_names_only_the_profiles_given() {
        let subject = subject();
        let plan = erase_state(subject.profile_ids.iter().take(1));
        let what: Vec<&str> = plan.iter().map(|(w, _)| *w).collect();
        assert_eq!(
            what,
            [
                "personalisation",
                "segmentMemberships",
                "itemInteractions",
                "itemPairEvidence"
            ]
        );
        for (_, statement) in &plan {
            assert_eq!(
                statement.params,
                vec![Param::Text(r#"["prof_new"]"#.into())]
            );
        }
    }

    #[test]
    fn erasure_targets_every_table_with_the_subjects_values() {
        let plan = erase(&subject(), &["demo-site".into()], 0);
        let tables: Vec<&str> = plan.iter().map(|(what, _)| *what).collect();
        assert_eq!(
            tables,
            [
                "archiveObjects",
                "events",
                "traits",
                "consentRecords",
                "identityLinks",
                "sharedLinksRedacted",
                "linkMembers",
                "profileRows",
                "profileRows",
                "identities",
                "walkPositions",
                "merges",
                "journeyMessages",
                "journeyDecisions",
                "journeyRuns",
                "refusedMerges",
                // The email as someone else's claim: four body fields (each noting the archive
                // objects it changes) and trait rows; the user ID as another browser's
                // `claimedUserId`.
                "archiveObjects",
                "redactedClaims",
                "archiveObjects",
                "redactedClaims",
                "archiveObjects",
                "redactedClaims",
                "archiveObjects",
                "redactedClaims",
                "redactedClaims",
                // The device ID as someone else's claim.
                "archiveObjects",
                "redactedClaims",
                // Events only the archive holds: the index names their objects, then goes,
                // and tombstones keep the rebuilds from keeping the person's lines.
                "archiveObjects",
                "archiveIndex",
                "archiveTombstones",
                "redactedClaims"
            ]
        );
        let (_, tombstones) = &plan[plan.len() - 2];
        let people: Vec<i64> = match &tombstones.params[0] {
            Param::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            people.len(),
            5,
            "the anonymous and cookie IDs, the user ID, the email and the device ID (another \
             browser's line may claim it)"
        );
        assert_eq!(
            plan[17].1.params,
            vec![Param::Text(r#"["jane@example.com"]"#.into())]
        );
        let anonymous = Subject {
            identifiers: ["anonymous_id:a1".to_owned()].into(),
            profile_ids: Default::default(),
        };
        assert_eq!(
            erase(&anonymous, &[], 0).len(),
            19,
            "no scan of bodies for a person without contacts"
        );
        let events = &plan[1].1;
        assert_eq!(
            plan[0].1.params[..3],
            events.params[..],
            "the archive notes what goes"
        );
        assert_eq!(
            events.params,
            vec![
                Param::Text(r#"["demo-site"]"#.into()),
                Param::Text(r#"["a1","c1"]"#.into()),
                Param::Text(r#"["u1"]"#.into())
            ]
        );
        // Shared links must be redacted before their members are deleted.
        let position = |what| tables.iter().position(|t| *t == what).unwrap();
        assert!(position("sharedLinksRedacted") < position("linkMembers"));
        assert!(position("identityLinks") < position("linkMembers"));
        assert!(position("archiveObjects") < position("events"));
    }

    #[test]
    fn kv_keys_cover_profiles_and_anonymous_pointers() {
        assert_eq!(
            subject().kv_keys(),
            ["profile:prof_new", "profile:prof_old", "anon:a1", "anon:c1"]
        );
    }

    #[test]
    fn suppression_keys_of_a_subject_skip_unparseable_text() {
        let mut s = subject();
        s.identifiers.insert("not an identifier".into());
        let keys = s.suppression_keys();
        assert_eq!(keys.len(), 5);
        assert!(keys.contains(&(suppression_key(&email("jane@example.com")), "email")));
    }

    #[test]
    fn a_suppressed_email_is_refused_even_as_a_browsers_unproven_claim() {
        let raw = json!({"batch": [
            {"type": "identify", "messageId": "m1", "anonymousId": "a1",
             "traits": {"email": "Jane@Example.com"}, "context": {"seam": {"identity": "claimed"}}},
            {"type": "identify", "messageId": "m2", "anonymousId": "a2",
             "traits": {"email": "other@example.com"}, "context": {"seam": {"identity": "claimed"}}}
        ]});
        let decoded = crate::collect::ingest::decode(raw.to_string().as_bytes(), None, 1, || {
            "generated".into()
        })
        .unwrap();
        let rules = Rules::default();
        let jane = suppression_key(&email("jane@example.com"));
        assert!(decoded.valid().all(|e| !identifiers_of(e, &rules)
            .iter()
            .any(|i| i.kind == IdType::Email)));
        let (kept, refused) = apply_suppressions(decoded, &rules, |k| k == jane);
        assert_eq!(refused, 1);
        assert_eq!(
            kept.valid()
                .map(|e| e.message_id.as_str())
                .collect::<Vec<_>>(),
            ["m2"]
        );
    }

    #[test]
    fn a_browsers_consent_history_is_dated_by_its_arrival() {
        let e = event(
            json!({"type": "track", "messageId": "m1", "anonymousId": "a1", "event": "X",
                             "timestamp": "2001-01-01T00:00:00Z",
                             "context": {"consent": {"gcm": {"analytics_storage": "granted"}}}}),
        );
        let records = consent_records(&[&e], "src", &Rules::default(), false, true);
        assert_eq!(records[0].timestamp_ms, e.received_at_ms);
        let trusted = consent_records(&[&e], "src", &Rules::default(), false, false);
        assert_eq!(
            trusted[0].timestamp_ms, e.timestamp_ms,
            "a server may backfill"
        );
    }

    #[test]
    fn consent_records_keep_changes_only_and_survive_anonymisation() {
        let with = |mid: &str, second: u32, state: &str| {
            event(
                json!({"type": "track", "messageId": mid, "anonymousId": "a1", "event": "X",
                         "timestamp": format!("2026-01-01T00:00:{second:02}Z"),
                         "context": {"consent": {"gcm": {"analytics_storage": state}}}}),
            )
        };
        let events = [
            with("m3", 3, "denied"),
            with("m1", 1, "granted"),
            with("m2", 2, "granted"),
        ];
        let refs: Vec<&Event> = events.iter().collect();
        let records = consent_records(&refs, "src", &Rules::default(), false, false);
        let summary: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.message_key.as_str(), r.state.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("src/m1", r#"{"gcm":{"analytics_storage":"granted"}}"#),
                ("src/m3", r#"{"gcm":{"analytics_storage":"denied"}}"#)
            ]
        );
        assert_eq!(records[0].identifier, "anonymous_id:a1");
        let statements = record_consent(&records);
        assert_eq!(statements.len(), 4, "each record and its count");
        assert!(statements[0].sql.contains("<> ?5"));
        assert!(
            statements[1].sql.contains("WHERE changes() > 0"),
            "only a change counts"
        );
    }

    #[test]
    fn consent_state_adds_gpc_and_caps_size() {
        let plain = event(json!({"type": "page", "anonymousId": "a"}));
        assert_eq!(consent_state(&plain, false), None);
        assert_eq!(
            consent_state(&plain, true).as_deref(),
            Some(r#"{"gpc":true}"#)
        );
        let huge = event(
            json!({"type": "page", "anonymousId": "a", "context": {"consent": {
            "tcString": "x".repeat(5000), "gcm": {"ad_storage": "denied"}}}}),
        );
        assert_eq!(
            consent_state(&huge, false).as_deref(),
            Some(r#"{"gcm":{"ad_storage":"denied"}}"#)
        );
        assert_eq!(huge.kind, EventType::Page);
    }

    #[test]
    fn hashes_emails_and_phones_in_bodies_with_a_secret_salt() {
        let raw = || {
            decoded(vec![event(json!({"type": "identify", "anonymousId": "a",
                "traits": {"email": " Jane@Example.com ", "phone": "+31 6 1234 5678", "name": "Jane"},
                "context": {"traits": {"email": "jane@example.com"}}}))])
        };
        let unchanged = hash_pii_fields(raw(), &Rules::default());
        assert_eq!(unchanged, raw(), "nothing changes without hashPii");
        let salted = Rules {
            hash_pii: true,
            pii_salt: Some("s3cret-salt-value".into()),
            ..Rules::default()
        };
        let out = hash_pii_fields(raw(), &salted);
        let Outcome::Valid(e) = &out.outcomes[0] else {
            panic!("still valid")
        };
        let email = e.body["traits"]["email"].as_str().unwrap();
        assert_eq!(email.len(), 64);
        assert_eq!(
            e.body["context"]["traits"]["email"], email,
            "same hash everywhere"
        );
        assert_eq!(e.body["traits"]["name"], "Jane");
        assert_ne!(email, sha256_hex(b"jane@example.com"), "salted");
        let identifiers = identifiers_of(e, &salted);
        assert!(identifiers.contains(&Identifier::new(IdType::Email, email)));
        let unsalted = Rules {
            hash_pii: true,
            ..Rules::default()
        };
        let Outcome::Valid(e) = &hash_pii_fields(raw(), &unsalted).outcomes[0] else {
            panic!("still valid")
        };
        assert_eq!(e.body["traits"]["email"], sha256_hex(b"jane@example.com"));
    }

    #[test]
    fn hashes_a_value_not_of_its_kind_so_that_nothing_reads_it_as_an_identifier() {
        let salted = Rules {
            hash_pii: true,
            pii_salt: Some("s3cret-salt-value".into()),
            ..Rules::default()
        };
        let out = hash_pii_fields(
            decoded(vec![event(json!({"type": "identify", "anonymousId": "a",
                "traits": {"email": " +44 20 7946 0958 ", "phone": "jane@example", "name": "n/a"},
                "context": {"traits": {"email": "n/a", "phone": ""}}}))]),
            &salted,
        );
        let Outcome::Valid(e) = &out.outcomes[0] else {
            panic!("still valid")
        };
        let email = e.body["traits"]["email"].as_str().unwrap();
        let phone_hash = Identifier::normalized(IdType::Phone, "+44 20 7946 0958", &salted);
        assert_eq!(
            Some(email),
            phone_hash.as_ref().map(|p| unusable(&p.value)).as_deref(),
            "hashed as the phone it is, as erasure finds it"
        );
        let subject = Subject {
            identifiers: [phone_hash.unwrap().to_string()].into(),
            profile_ids: Default::default(),
        };
        assert!(subject.contact_values().contains(email));
        assert_eq!(email.len(), "unusable:".len() + 64);
        assert!(!email.chars().any(|c| c.is_ascii_digit()));
        let phone = e.body["traits"]["phone"].as_str().unwrap();
        assert!(phone.starts_with("unusable:") && !phone.contains("jane"));
        let again = hash_pii_fields(
            decoded(vec![event(
                json!({"type": "identify", "anonymousId": "a", "traits": {"email": email}}),
            )]),
            &salted,
        );
        let Outcome::Valid(twice) = &again.outcomes[0] else {
            panic!("still valid")
        };
        assert_eq!(
            twice.body["traits"]["email"], email,
            "an unusable value read again (an export imported) is kept, not hashed twice"
        );
        assert_eq!(
            e.body["context"]["traits"],
            json!({"email": "n/a", "phone": ""}),
            "placeholders and empty values stay"
        );
        assert!(
            identifiers_of(e, &salted)
                .iter()
                .all(|i| !matches!(i.kind, IdType::Email | IdType::Phone)),
            "a stored unusable value is no identifier when read again"
        );
    }

    #[test]
    fn audit_entries_name_the_subject_only_by_key() {
        let entry = AuditEntry {
            request_id: "req_1".into(),
            action: "delete",
            actor: "support-desk".into(),
            subject: Some(suppression_key(&email("jane@example.com"))),
            detail: json!({"events": 3}),
            at_ms: 5,
        };
        let statement = audit(&entry);
        let params = format!("{:?}", statement.params);
        assert!(!params.contains("jane"));
        assert!(params.contains("support-desk"));
    }
}
