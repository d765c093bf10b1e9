//! D1 keeps only hot events (#18, docs/scale.md): once an event is archived, older than the hot
//! window and owed to no destination, compaction takes its row out of `events`. What stays is
//! small and per person or per object, not per event body:
//! - a dedup key (8 bytes of a hash) while the source's dedup window lasts, so a resend is
//!   still a duplicate;
//! - which archive objects hold a person's lines (`archive_people`, by hashed identifier,
//!   claimed contact or device ID), so timelines, access requests and erasure find them in R2
//!   (with profile shards, in each person key's home: [`super::spread`]).
//!
//! Erasure leaves tombstones (hashed identifiers with the time): an object's rebuild keeps the
//! lines D1 no longer holds unless a tombstone names them (see [`super::rebuild`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::format::time::DAY_MS;
use crate::plan::{Param, Statement};

/// Where events carry an email or phone as a claim: an erasure redacts these in other people's
/// events, in D1 and in the archive.
pub const CLAIMED_CONTACTS: [&str; 4] = [
    "$.traits.email",
    "$.context.traits.email",
    "$.traits.phone",
    "$.context.traits.phone",
];

/// Where events carry a device ID. From a browser it is a claim (naming one proves nothing,
/// `identity::claims_of`), kept on someone else's event: an erasure takes the person's device
/// IDs out of other people's events too, in D1 and in the archive.
pub const CLAIMED_DEVICE: &str = "$.context.device.id";

/// Rows one compaction round reads at most (it takes those that are ready).
pub const ROUND: u32 = 2000;

/// Default hot window: how long an archived event keeps its whole row in D1 (the live view,
/// recent timelines and segment sweeps read it there).
pub const DEFAULT_HOT_HOURS: i64 = 24;

/// 8 bytes of SHA-256 as an SQLite integer. Bound as text or inside JSON text, never as a
/// number parameter: the Worker's bindings pass numbers as doubles.
fn hash64(parts: &[&str]) -> i64 {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// An event's dedup key once its row is gone. A false match needs two of the window's message
/// IDs to share 64 bits of SHA-256: about one in 10^7 at a billion keys.
pub fn event_key(source_id: &str, message_id: &str) -> i64 {
    hash64(&[source_id, message_id])
}

/// What a line can name a person by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// The event's `anonymous_id` column (anonymous and cookie IDs).
    Anonymous,
    /// The event's `user_id` column.
    User,
    /// An email or phone claimed in its traits, in each of its [`contact_forms`].
    Contact,
    /// A device ID ([`CLAIMED_DEVICE`]), as [`device_form`].
    Device,
}

/// The index key of a person's identifier or contact.
pub fn person_key(named: Named, value: &str) -> i64 {
    let class = match named {
        Named::Anonymous => "a",
        Named::User => "u",
        Named::Contact => "c",
        Named::Device => "d",
    };
    hash64(&[class, value])
}

/// A claimed email or phone's index forms: as the identity graph normalises one
/// ([`crate::identity::contact_value`]), which is how erasure names the person's own, and as
/// SQL finds it in D1's events ([`crate::privacy::sql_contact_form`]) where that differs (a
/// phone written "(+44) 20 …" is `44…` to the graph, `+44…` to SQL).
pub fn contact_forms(value: &Value) -> Vec<String> {
    let number;
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Number(n) => {
            number = n.to_string();
            number.as_str()
        }
        _ => return Vec::new(),
    };
    let mut forms: Vec<String> = crate::identity::contact_value(text).into_iter().collect();
    let sql = crate::privacy::sql_contact_form(text);
    if !sql.is_empty() && !forms.contains(&sql) {
        forms.push(sql);
    }
    forms
}

/// A device ID as the identity graph normalises one (and as SQL's trim in `privacy` has it):
/// text or a number, without surrounding white space.
pub fn device_form(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// The person keys of a line or row: its IDs, the contacts its traits claim and its device ID.
pub fn people(anonymous_id: Option<&str>, user_id: Option<&str>, body: &Value) -> Vec<i64> {
    let mut keys = Vec::new();
    if let Some(a) = anonymous_id {
        keys.push(person_key(Named::Anonymous, a));
    }
    if let Some(u) = user_id {
        keys.push(person_key(Named::User, u));
    }
    for path in CLAIMED_CONTACTS {
        for c in pointer(body, path).map(contact_forms).unwrap_or_default() {
            keys.push(person_key(Named::Contact, &c));
        }
    }
    if let Some(d) = pointer(body, CLAIMED_DEVICE).and_then(device_form) {
        keys.push(person_key(Named::Device, &d));
    }
    keys
}

/// A `$.a.b` path in a JSON value.
pub fn pointer<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let pointer = path.trim_start_matches('$').replace('.', "/");
    value.pointer(&pointer)
}

/// A row compaction may take (`SELECT` by [`candidates`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[allow(missing_docs)] // the columns of `events`, and the claimed contacts and device ID
pub struct Cold {
    pub source_id: String,
    pub message_id: String,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub received_at: i64,
    pub claim: String,
    /// The event's traits, context traits and device ID, as
    /// `{"traits": …, "context": {"traits": …, "device": {"id": …}}}`.
    #[serde(default)]
    pub claims: Option<String>,
}

impl Cold {
    /// The person keys the row names.
    pub fn people(&self) -> Vec<i64> {
        let claims: Value = self
            .claims
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or(Value::Null);
        people(
            self.anonymous_id.as_deref(),
            self.user_id.as_deref(),
            &claims,
        )
    }
}

/// Where compaction goes on from: rows sort by receipt time, source and message ID. Rows it
/// had to leave (owed to a destination, not yet archived) are passed over until the cursor
/// comes round again, so they cannot hold up the rows after them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Cursor {
    /// Receipt time of the last row looked at.
    pub received_at: i64,
    /// Its source.
    pub source_id: String,
    /// Its message ID.
    pub message_id: String,
}

/// The saved cursor (one row or none): [`Cursor`].
pub fn cursor() -> Statement {
    Statement {
        sql: "SELECT received_at, source_id, message_id FROM archive_compaction WHERE id = 1"
            .into(),
        params: vec![],
    }
}

/// Saves where the next round starts, or (`None`) starts the next sweep from the oldest row.
pub fn save_cursor(at: Option<&Cursor>) -> Statement {
    match at {
        Some(c) => Statement {
            sql: "INSERT INTO archive_compaction (id, received_at, source_id, message_id) \
                  VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET \
                  received_at = excluded.received_at, source_id = excluded.source_id, \
                  message_id = excluded.message_id"
                .into(),
            params: vec![
                Param::Int(c.received_at),
                Param::Text(c.source_id.clone()),
                Param::Text(c.message_id.clone()),
            ],
        },
        None => Statement {
            sql: "DELETE FROM archive_compaction WHERE id = 1".into(),
            params: vec![],
        },
    }
}

/// Up to `limit` rows after `after`, received before `hot_before_ms`, in receipt order, each
/// with whether compaction may take it (`ready`): archived before `settled_before_ms` (so no
/// consumer can still be writing its claim) and owed to no destination (a pending, sending or
/// dead delivery reads the row's body). [`Candidate`]s.
pub fn candidates(
    after: &Cursor,
    hot_before_ms: i64,
    settled_before_ms: i64,
    limit: u32,
) -> Statement {
    Statement {
        sql: "SELECT e.source_id, e.message_id, e.anonymous_id, e.user_id, e.received_at, \
              e.archive_object AS claim, \
              (e.archived_at IS NOT NULL AND e.archived_at < ?5 AND e.archive_object IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.source_id = e.source_id \
               AND d.message_id = e.message_id AND d.status IN ('pending', 'sending', 'dead'))) AS ready, \
              json_object('traits', json_extract(e.body, '$.traits'), \
              'context', json_object('traits', json_extract(e.body, '$.context.traits'), \
              'device', json_object('id', json_extract(e.body, '$.context.device.id')))) AS claims \
              FROM events e WHERE e.received_at >= ?1 AND e.received_at < ?4 \
              AND (e.received_at, e.source_id, e.message_id) > (?1, ?2, ?3) \
              ORDER BY e.received_at, e.source_id, e.message_id LIMIT ?6"
            .into(),
        params: vec![
            Param::Int(after.received_at),
            Param::Text(after.source_id.clone()),
            Param::Text(after.message_id.clone()),
            Param::Int(hot_before_ms),
            Param::Int(settled_before_ms),
            Param::Int(i64::from(limit)),
        ],
    }
}

/// A row [`candidates`] read (no `serde(flatten)`: it would read the Worker's numbers as
/// floats).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[allow(missing_docs)] // [`Cold`]'s columns, and whether compaction may take the row
pub struct Candidate {
    pub source_id: String,
    pub message_id: String,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub received_at: i64,
    pub claim: Option<String>,
    #[serde(default)]
    pub claims: Option<String>,
    pub ready: i64,
}

impl Candidate {
    /// Where the next round starts when this is the last row read.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            received_at: self.received_at,
            source_id: self.source_id.clone(),
            message_id: self.message_id.clone(),
        }
    }

    /// The row, if compaction may take it.
    pub fn ready(self) -> Option<Cold> {
        if self.ready == 0 {
            return None;
        }
        Some(Cold {
            source_id: self.source_id,
            message_id: self.message_id,
            anonymous_id: self.anonymous_id,
            user_id: self.user_id,
            received_at: self.received_at,
            claim: self.claim?,
            claims: self.claims,
        })
    }
}

/// A person's index entry as a compaction round finds it: the person key, the object (claim,
/// UTC day, source) and the newest of their rows in it (`received_at`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The person key ([`person_key`]).
    pub person: i64,
    /// The object's claim.
    pub claim: String,
    /// The object's UTC epoch day.
    pub day: i64,
    /// The object's source.
    pub source_id: String,
    /// The newest `received_at` of the person's rows in it: a tombstone from an erasure at or
    /// after it keeps the entry out.
    pub at: i64,
}

/// The statements (one batch) that take `rows` out of `events`: their objects and the people
/// `in_db` says `DB` indexes, a dedup key for each still inside its source's dedup window
/// (`window_days` by source), then the rows deleted, each only as it was read (a resend after
/// its window moved it to another claim). The other people's entries ([`elsewhere`]) are
/// written before it. A person an erasure tombstoned after the row came is not indexed: the
/// erasure already took their index rows, and this read may be older than it.
pub fn compact(
    rows: &[Cold],
    window_days: impl Fn(&str) -> u32,
    now_ms: i64,
    in_db: impl Fn(i64) -> bool,
) -> Vec<Statement> {
    if rows.is_empty() {
        return Vec::new();
    }
    let objects: BTreeSet<(&str, i64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.claim.as_str(),
                r.received_at.div_euclid(DAY_MS),
                r.source_id.as_str(),
            )
        })
        .collect();
    let objects: Vec<Value> = objects.into_iter().map(|o| json!(o)).collect();
    let people: Vec<Value> = entries(rows)
        .into_iter()
        .filter(|e| in_db(e.person))
        .map(|e| json!([e.person, e.claim, e.day, e.source_id, e.at]))
        .collect();
    let keys: Vec<Value> = rows
        .iter()
        .filter_map(|r| {
            let expires = r.received_at + i64::from(window_days(&r.source_id)) * DAY_MS;
            (expires > now_ms).then(|| json!([event_key(&r.source_id, &r.message_id), expires]))
        })
        .collect();
    let gone: Vec<Value> = rows
        .iter()
        .map(|r| json!([r.source_id, r.message_id, r.claim, r.received_at]))
        .collect();
    let text = |v: Vec<Value>| Param::Text(Value::Array(v).to_string());
    vec![
        insert_objects(text(objects)),
        Statement {
            sql: "INSERT OR IGNORE INTO archive_people (person, object) \
                  SELECT json_extract(j.value, '$[0]'), o.id FROM json_each(?1) j \
                  JOIN archive_objects o ON o.claim = json_extract(j.value, '$[1]') \
                  AND o.day = json_extract(j.value, '$[2]') AND o.source_id = json_extract(j.value, '$[3]') \
                  WHERE NOT EXISTS (SELECT 1 FROM archive_tombstones t \
                  WHERE t.person = json_extract(j.value, '$[0]') AND t.erased_at >= json_extract(j.value, '$[4]'))"
                .into(),
            params: vec![text(people)],
        },
        Statement {
            sql: "INSERT OR IGNORE INTO event_keys (day, key) \
                  SELECT json_extract(value, '$[1]') / 86400000, json_extract(value, '$[0]') \
                  FROM json_each(?1)"
                .into(),
            params: vec![text(keys)],
        },
        Statement {
            sql: "DELETE FROM events WHERE (source_id, message_id, archive_object, received_at) IN \
                  (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                  json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?1)) \
                  AND archived_at IS NOT NULL"
                .into(),
            params: vec![text(gone)],
        },
    ]
}

/// The entries of `rows` for people whose index is not in `DB` (`in_db`), written in their
/// homes before [`compact`]'s batch (`super::spread::index`).
pub fn elsewhere(rows: &[Cold], in_db: impl Fn(i64) -> bool) -> Vec<Entry> {
    entries(rows)
        .into_iter()
        .filter(|e| !in_db(e.person))
        .collect()
}

/// Each person's entry per object of `rows`, once, at the newest of their rows there.
fn entries(rows: &[Cold]) -> Vec<Entry> {
    let mut people: BTreeMap<(i64, &str, i64, &str), i64> = BTreeMap::new();
    for row in rows {
        for person in row.people() {
            let at = people
                .entry((
                    person,
                    row.claim.as_str(),
                    row.received_at.div_euclid(DAY_MS),
                    row.source_id.as_str(),
                ))
                .or_insert(row.received_at);
            *at = (*at).max(row.received_at);
        }
    }
    people
        .into_iter()
        .map(|((person, claim, day, source_id), at)| Entry {
            person,
            claim: claim.to_owned(),
            day,
            source_id: source_id.to_owned(),
            at,
        })
        .collect()
}

/// The objects of `objects` (a JSON list of `[claim, day, source_id]`) made where missing.
pub(crate) fn insert_objects(objects: Param) -> Statement {
    Statement {
        sql: "INSERT INTO archive_objects (claim, day, source_id) \
              SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
              json_extract(value, '$[2]') FROM json_each(?1) WHERE true \
              ON CONFLICT (claim, day, source_id) DO NOTHING"
            .into(),
        params: vec![objects],
    }
}

/// Forgets dedup keys whose window ended before today: whole days of keys go by the table's
/// key, with no index on the time. (A key lasts to the end of the day its window ends: a resend
/// up to a day past the window is still a duplicate.)
pub fn expire_keys(now_ms: i64) -> Statement {
    Statement {
        sql: "DELETE FROM event_keys WHERE day < ?1".into(),
        params: vec![Param::Int(now_ms.div_euclid(DAY_MS))],
    }
}

/// Retention: the index of objects of days before `cutoff_day` (UTC epoch day), which retention
/// deletes from R2 (the second statement returns their IDs), and tombstones older than anything
/// the archive still holds.
pub fn expire_index(cutoff_day: i64) -> Vec<Statement> {
    vec![
        Statement {
            sql: "DELETE FROM archive_people WHERE object IN \
                  (SELECT id FROM archive_objects WHERE day < ?1)"
                .into(),
            params: vec![Param::Int(cutoff_day)],
        },
        // Their IDs: an entry in a profile shard written since the shards' part read them
        // goes too (`super::spread`).
        Statement {
            sql: "DELETE FROM archive_objects WHERE day < ?1 RETURNING id".into(),
            params: vec![Param::Int(cutoff_day)],
        },
        Statement {
            sql: "DELETE FROM archive_tombstones WHERE erased_at < ?1".into(),
            params: vec![Param::Int(cutoff_day * DAY_MS)],
        },
    ]
}

/// An archive object, as the index names it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Indexed {
    /// The claim that wrote it.
    pub claim: String,
    /// The UTC epoch day.
    pub day: i64,
    /// The source.
    pub source_id: String,
}

impl Indexed {
    /// The object's key.
    pub fn key(&self) -> String {
        super::object_key(&self.claim, &super::day_text(self.day), &self.source_id)
    }
}

/// Up to `limit` objects holding lines of any of `people`, newest first: [`Indexed`]s.
pub fn objects_of(people: &[i64], limit: u32) -> Statement {
    Statement {
        sql: "SELECT DISTINCT o.claim, o.day, o.source_id FROM archive_people p \
              JOIN archive_objects o ON o.id = p.object \
              WHERE p.person IN (SELECT value FROM json_each(?1)) \
              ORDER BY o.claim DESC LIMIT ?2"
            .into(),
        params: vec![
            Param::Text(json!(people).to_string()),
            Param::Int(i64::from(limit)),
        ],
    }
}

/// Keys `(source_id, message_id)` of lines read from the archive: which of them D1 still holds
/// as events (`source_id, message_id`). An object also holds lines whose rows compaction left
/// (owed to a destination), rows a rebuild copied back, and an old line of an event resent after
/// its dedup window: those are D1's, not the archive's alone.
pub fn still_held(keys: &[(String, String)]) -> Statement {
    let keys: Vec<[&str; 2]> = keys
        .iter()
        .map(|(source, message)| [source.as_str(), message.as_str()])
        .collect();
    Statement {
        sql: "SELECT source_id, message_id FROM events WHERE (source_id, message_id) IN \
              (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
            .into(),
        params: vec![Param::Text(json!(keys).to_string())],
    }
}

/// The person keys of a subject's anonymous IDs, user IDs, contacts and device IDs.
pub fn subject_people<'a>(
    anonymous: impl IntoIterator<Item = &'a String>,
    users: impl IntoIterator<Item = &'a String>,
    contacts: impl IntoIterator<Item = &'a String>,
    devices: impl IntoIterator<Item = &'a String>,
) -> Vec<i64> {
    let mut keys: Vec<i64> = anonymous
        .into_iter()
        .map(|a| person_key(Named::Anonymous, a))
        .chain(users.into_iter().map(|u| person_key(Named::User, u)))
        .chain(contacts.into_iter().map(|c| person_key(Named::Contact, c)))
        .chain(devices.into_iter().map(|d| person_key(Named::Device, d)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// An erasure's part in the archive (in the erasure's own batch): tombstones for the person's
/// keys, the objects the index names noted for rebuilding, and the index rows gone.
pub fn erase(people: &[i64], now_ms: i64) -> Vec<(&'static str, Statement)> {
    if people.is_empty() {
        return Vec::new();
    }
    let list = Param::Text(json!(people).to_string());
    vec![
        (
            "archiveObjects",
            Statement {
                sql: "INSERT INTO archive_rewrites (claim, day, source_id, noted_at) \
                      SELECT DISTINCT o.claim, o.day, o.source_id, ?2 FROM archive_people p \
                      JOIN archive_objects o ON o.id = p.object \
                      WHERE p.person IN (SELECT value FROM json_each(?1)) \
                      ON CONFLICT (claim, day, source_id) DO UPDATE SET noted_at = max(noted_at, excluded.noted_at)"
                    .into(),
                params: vec![list.clone(), Param::Int(now_ms)],
            },
        ),
        (
            "archiveIndex",
            Statement {
                sql: "DELETE FROM archive_people WHERE person IN (SELECT value FROM json_each(?1))"
                    .into(),
                params: vec![list.clone()],
            },
        ),
        (
            "archiveTombstones",
            Statement {
                sql: "INSERT INTO archive_tombstones (person, erased_at) \
                      SELECT value, ?2 FROM json_each(?1) WHERE true \
                      ON CONFLICT (person) DO UPDATE SET erased_at = excluded.erased_at"
                    .into(),
                params: vec![list, Param::Int(now_ms)],
            },
        ),
    ]
}

/// The tombstones among `people`: `person` (as text: a JS number would round 64 bits),
/// `erased_at`.
pub fn tombstones(people: &[i64]) -> Statement {
    Statement {
        sql: "SELECT CAST(person AS TEXT) AS person, erased_at FROM archive_tombstones \
              WHERE person IN (SELECT value FROM json_each(?1))"
            .into(),
        params: vec![Param::Text(json!(people).to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold(message_id: &str, received_at: i64) -> Cold {
        Cold {
            source_id: "web".into(),
            message_id: message_id.into(),
            anonymous_id: Some("a-1".into()),
            user_id: None,
            received_at,
            claim: "c1".into(),
            claims: Some(
                r#"{"traits":{"email":" Ann@Example.com "},"context":{"traits":null}}"#.into(),
            ),
        }
    }

    #[test]
    fn still_held_binds_the_lines_keys_as_one_json_list() {
        let statement = still_held(&[
            ("web".into(), "m1".into()),
            ("server".into(), "m\"2".into()),
        ]);
        assert_eq!(
            statement.params,
            vec![Param::Text(r#"[["web","m1"],["server","m\"2"]]"#.into())]
        );
        assert!(statement.sql.contains("(source_id, message_id) IN"));
    }

    #[test]
    fn keys_differ_by_source_and_class_and_are_stable() {
        assert_ne!(event_key("web", "m1"), event_key("srv", "m1"));
        assert_ne!(event_key("we", "bm1"), event_key("web", "m1"));
        assert_ne!(
            person_key(Named::Anonymous, "x"),
            person_key(Named::User, "x")
        );
        // Stored keys must survive upgrades: pinned.
        assert_eq!(event_key("web", "m1"), 8633595720303062363);
        assert_eq!(
            person_key(Named::User, "u-1"),
            hash64(&["u", "u-1"]),
            "the class is hashed with the value"
        );
    }

    #[test]
    fn contacts_are_normalised_as_erasure_matches_them() {
        let forms = |v: Value| contact_forms(&v);
        assert_eq!(forms(json!("  Ann@Example.COM ")), ["ann@example.com"]);
        assert_eq!(forms(json!("+49 (151) 123-45.67")), ["+491511234567"]);
        assert_eq!(forms(json!(4915112)), ["4915112"]);
        assert!(forms(json!({"a": 1})).is_empty());
        // What SQL's trim and marks missed: any white space, any mark between the digits.
        assert_eq!(forms(json!("\tAnn@Example.COM\u{a0}")), ["ann@example.com"]);
        assert_eq!(
            forms(json!("+49 30/123\u{2011}45\u{a0}67")),
            ["+49301234567"]
        );
        assert_eq!(
            forms(json!("AB".repeat(32))),
            ["ab".repeat(32)],
            "a hashed contact keeps its letters"
        );
        assert_eq!(
            forms(json!("(+44) 20 7946 0018")),
            ["442079460018", "+442079460018"],
            "the graph's form, and SQL's where it differs"
        );
    }

    #[test]
    fn contact_and_device_forms_are_the_identity_graphs() {
        use crate::identity::{IdType, Identifier, Rules};
        for raw in [
            "\t Ann@Example.COM ",
            "+44 (20) 7946-0018",
            "\u{3000}0151 1234567\n",
        ] {
            let kind = if raw.contains('@') {
                IdType::Email
            } else {
                IdType::Phone
            };
            let own = Identifier::normalized(kind, raw, &Rules::default()).unwrap();
            assert_eq!(contact_forms(&json!(raw)), [own.value], "{raw:?}");
        }
        let own = Identifier::normalized(IdType::DeviceId, "\u{a0}dev-9\t", &Rules::default());
        assert_eq!(device_form(&json!("\u{a0}dev-9\t")), own.map(|i| i.value));
    }

    #[test]
    fn a_row_names_its_ids_and_claimed_contacts() {
        let row = cold("m1", 0);
        assert_eq!(
            row.people(),
            vec![
                person_key(Named::Anonymous, "a-1"),
                person_key(Named::Contact, "ann@example.com")
            ]
        );
    }

    #[test]
    fn a_row_names_the_device_id_it_carries() {
        let mut row = cold("m1", 0);
        // As `candidates` reads it, without traits.
        row.claims =
            Some(r#"{"traits":null,"context":{"traits":null,"device":{"id":" dev-9 "}}}"#.into());
        assert_eq!(
            row.people(),
            vec![
                person_key(Named::Anonymous, "a-1"),
                person_key(Named::Device, "dev-9")
            ]
        );
        assert_eq!(
            device_form(&json!(42)),
            Some("42".into()),
            "as SQL casts a number"
        );
        assert_eq!(device_form(&json!("  ")), None);
        assert_ne!(
            person_key(Named::Device, "x"),
            person_key(Named::Anonymous, "x"),
            "a device ID and an anonymous ID of the same text are two people"
        );
    }

    #[test]
    fn keys_are_kept_only_inside_the_dedup_window() {
        let now = 10 * DAY_MS;
        let rows = [cold("old", 0), cold("recent", 9 * DAY_MS)];
        let plan = compact(&rows, |_| 7, now, |_| true);
        assert_eq!(plan.len(), 4);
        let keys: Value = match &plan[2].params[0] {
            Param::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            keys,
            json!([[event_key("web", "recent"), 16 * DAY_MS]]),
            "the old event's window ended: no key"
        );
        assert!(plan[3].sql.starts_with("DELETE FROM events"));
    }

    #[test]
    fn indexes_each_person_once_per_object() {
        let rows = [cold("m1", 5), cold("m2", 6)];
        let plan = compact(&rows, |_| 7, 10, |_| true);
        let people: Vec<Value> = match &plan[1].params[0] {
            Param::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            people.len(),
            2,
            "one anonymous ID and one contact, once each"
        );
        assert!(compact(&[], |_| 7, 10, |_| true).is_empty());
    }

    #[test]
    fn an_erasure_without_keys_plans_nothing() {
        assert!(erase(&[], 1).is_empty());
        let plan = erase(&[1, 2], 5);
        assert_eq!(
            plan.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
            ["archiveObjects", "archiveIndex", "archiveTombstones"]
        );
    }
}
