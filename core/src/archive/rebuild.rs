//! Rebuilding an object an erasure (or a replaced event) changed. D1 holds only the object's
//! hot lines, so the new object is made from both: each line D1 still holds as D1 holds it
//! now, and each line D1 no longer holds as the old object had it, unless a tombstone names
//! its person (erased after it was received), or D1 holds the event again elsewhere (resent
//! after its dedup window). A claimed contact or device ID a tombstone names is taken out of a
//! kept line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

use serde_json::Value;

use super::compact::{
    contact_forms, device_form, people, person_key, pointer, Named, CLAIMED_CONTACTS,
    CLAIMED_DEVICE,
};
use super::{gzip, Object, Row};
use crate::format::time::parse_iso8601;

/// The most an archive object may inflate to when read back.
pub const MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;

/// A line of an archive object, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The line's text.
    pub text: String,
    /// Its parsed columns and body.
    pub value: Value,
    /// `message_id`.
    pub message_id: String,
    /// `received_at`, epoch ms.
    pub received_at: i64,
}

impl Line {
    fn column(&self, name: &str) -> Option<&str> {
        self.value.get(name).and_then(Value::as_str)
    }

    /// The person keys of the line: its IDs, claimed contacts and device ID.
    pub fn people(&self) -> Vec<i64> {
        people(
            self.column("anonymous_id"),
            self.column("user_id"),
            self.value.get("body").unwrap_or(&Value::Null),
        )
    }

    /// Whether the line names any of `keys` by ID (not by a claimed contact).
    pub fn names(&self, keys: &HashSet<i64>) -> bool {
        let anonymous = self
            .column("anonymous_id")
            .map(|a| person_key(Named::Anonymous, a));
        let user = self.column("user_id").map(|u| person_key(Named::User, u));
        [anonymous, user]
            .into_iter()
            .flatten()
            .any(|k| keys.contains(&k))
    }
}

/// Inflates a gzipped object; `None` if it is not gzipped UTF-8 or inflates past
/// [`MAX_OBJECT_BYTES`] (refused, never cut: a rebuild writes back what it read).
pub fn gunzip(bytes: &[u8]) -> Option<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_OBJECT_BYTES + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() as u64 <= MAX_OBJECT_BYTES).then_some(text)
}

/// An object's lines; a line that is not one of the archive's is skipped.
pub fn lines(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|text| {
            let value: Value = serde_json::from_str(text).ok()?;
            let message_id = value.get("message_id")?.as_str()?.to_owned();
            let received_at = parse_iso8601(value.get("received_at")?.as_str()?)?;
            Some(Line {
                text: text.to_owned(),
                value,
                message_id,
                received_at,
            })
        })
        .collect()
}

/// The lines of `old` that D1 does not hold among `rows`: the ones only the archive has.
pub fn archived_only<'a>(old: &'a [Line], rows: &[Row]) -> Vec<&'a Line> {
    let held: HashSet<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    old.iter()
        .filter(|l| !held.contains(l.message_id.as_str()))
        .collect()
}

/// The rebuilt object at `key`, or `None` when nothing is left. `tombstones` are erased person
/// keys with when; `elsewhere` the message IDs D1 holds again outside this object.
pub fn rebuilt(
    key: String,
    rows: &[Row],
    old: &[Line],
    tombstones: &HashMap<i64, i64>,
    elsewhere: &HashSet<String>,
) -> Option<Object> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in archived_only(old, rows) {
        if elsewhere.contains(&line.message_id) {
            continue;
        }
        let erased: HashSet<i64> = tombstones
            .iter()
            .filter(|(_, at)| line.received_at <= **at)
            .map(|(k, _)| *k)
            .collect();
        if line.names(&erased) {
            continue;
        }
        out.insert(line.message_id.clone(), redacted(line, &erased));
    }
    for row in rows {
        out.insert(row.message_id.clone(), row.line());
    }
    if out.is_empty() {
        return None;
    }
    let events = out.len();
    let mut text = String::new();
    for line in out.into_values() {
        text.push_str(&line);
        text.push('\n');
    }
    Some(Object {
        key,
        body: gzip(text.as_bytes()),
        events,
    })
}

/// The line without the claimed contacts and device ID `erased` names.
fn redacted(line: &Line, erased: &HashSet<i64>) -> String {
    let body = line.value.get("body").unwrap_or(&Value::Null);
    let mut named: Vec<&str> = CLAIMED_CONTACTS
        .into_iter()
        .filter(|path| {
            pointer(body, path)
                .map(contact_forms)
                .unwrap_or_default()
                .iter()
                .any(|c| erased.contains(&person_key(Named::Contact, c)))
        })
        .collect();
    if pointer(body, CLAIMED_DEVICE)
        .and_then(device_form)
        .is_some_and(|d| erased.contains(&person_key(Named::Device, &d)))
    {
        named.push(CLAIMED_DEVICE);
    }
    if named.is_empty() {
        return line.text.clone();
    }
    let mut value = line.value.clone();
    for path in named {
        let mut parts: Vec<&str> = path.trim_start_matches("$.").split('.').collect();
        let Some(field) = parts.pop() else { continue };
        let mut at = value.get_mut("body");
        for part in parts {
            at = at.and_then(|v| v.get_mut(part));
        }
        if let Some(Value::Object(map)) = at {
            map.remove(field);
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::compact::person_key;
    use serde_json::json;

    fn row(message_id: &str, anonymous_id: &str, received_at: i64) -> Row {
        Row {
            source_id: "web".into(),
            message_id: message_id.into(),
            kind: "track".into(),
            name: Some("Viewed".into()),
            anonymous_id: Some(anonymous_id.into()),
            user_id: None,
            timestamp: received_at,
            received_at,
            body: json!({"type": "track", "traits": {"email": "Ann@x.org"}}).to_string(),
        }
    }

    fn object_of(rows: &[Row]) -> Vec<Line> {
        let text: String = rows.iter().map(|r| r.line() + "\n").collect();
        lines(&text)
    }

    fn ids(object: &Object) -> Vec<String> {
        lines(&gunzip(&object.body).unwrap())
            .into_iter()
            .map(|l| l.message_id)
            .collect()
    }

    #[test]
    fn keeps_lines_only_the_archive_holds_and_drops_the_erased() {
        let old = object_of(&[
            row("m1", "a-1", 100),
            row("m2", "a-2", 100),
            row("m3", "a-3", 100),
        ]);
        let erased = HashMap::from([(person_key(Named::Anonymous, "a-2"), 200)]);
        // m1 is still hot (D1 holds it); m2 and m3 only the archive has.
        let object = rebuilt(
            "k".into(),
            &[row("m1", "a-1", 100)],
            &old,
            &erased,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(ids(&object), ["m1", "m3"]);
        assert_eq!(object.events, 2);
    }

    #[test]
    fn a_tombstone_spares_what_came_after_the_erasure() {
        let old = object_of(&[row("m1", "a-1", 300)]);
        let erased = HashMap::from([(person_key(Named::Anonymous, "a-1"), 200)]);
        let object = rebuilt("k".into(), &[], &old, &erased, &HashSet::new()).unwrap();
        assert_eq!(ids(&object), ["m1"]);
    }

    #[test]
    fn drops_a_line_resent_elsewhere_and_deletes_an_empty_object() {
        let old = object_of(&[row("m1", "a-1", 100)]);
        let elsewhere = HashSet::from(["m1".to_owned()]);
        assert_eq!(
            rebuilt("k".into(), &[], &old, &HashMap::new(), &elsewhere),
            None
        );
    }

    #[test]
    fn redacts_an_erased_contact_claimed_in_someone_elses_line() {
        let old = object_of(&[row("m1", "a-1", 100)]);
        let erased = HashMap::from([(person_key(Named::Contact, "ann@x.org"), 200)]);
        let object = rebuilt("k".into(), &[], &old, &erased, &HashSet::new()).unwrap();
        let kept = lines(&gunzip(&object.body).unwrap());
        assert_eq!(kept[0].value["body"]["traits"], json!({}));
        assert_eq!(kept[0].value["anonymous_id"], "a-1");
    }

    #[test]
    fn redacts_an_erased_device_id_claimed_in_someone_elses_line() {
        let mut claimant = row("m1", "a-1", 100);
        claimant.body =
            json!({"type": "track", "context": {"device": {"id": " dev-9 ", "type": "ios"}}})
                .to_string();
        let old = object_of(&[claimant, row("m2", "a-2", 100)]);
        let erased = HashMap::from([(person_key(Named::Device, "dev-9"), 200)]);
        let object = rebuilt("k".into(), &[], &old, &erased, &HashSet::new()).unwrap();
        let kept = lines(&gunzip(&object.body).unwrap());
        assert_eq!(
            kept.len(),
            2,
            "both lines stay: neither is the erased person's own"
        );
        assert_eq!(
            kept[0].value["body"]["context"]["device"],
            json!({"type": "ios"})
        );
        assert_eq!(
            kept[1].text, old[1].text,
            "a line without the device is as it was"
        );
    }

    #[test]
    fn skips_lines_that_are_not_the_archives() {
        assert_eq!(lines("not json\n{\"message_id\": 1}\n").len(), 0);
        assert_eq!(gunzip(b"not gzip"), None);
    }
}
