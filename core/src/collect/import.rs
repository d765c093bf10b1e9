//! CSV import (offline orders from a shop system, contacts from a CRM): a column mapping turns
//! each row into a Segment event (`identify` or `track`), which then goes through ingestion like
//! any other. Rows are read a chunk at a time from a byte offset, so a file of any size is
//! processed in bounded steps. A row's `messageId` derives from its key column: uploading the
//! same file again stores nothing twice (within the source's dedup window).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Columns a file may have.
pub const MAX_COLUMNS: usize = 200;
/// Bytes one field may hold.
pub const MAX_FIELD_BYTES: usize = 32 * 1024;

/// A mistake in an import request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The mapping is not what an import needs.
    #[error("mapping: {0}")]
    InvalidMapping(String),
    /// The file's first line is not a header of named columns.
    #[error("the first line must name the columns (at most 200, each once)")]
    InvalidHeader,
    /// Imports go to a trusted (server) source.
    #[error("source must name a server source")]
    UntrustedSource,
    /// The upload must say its length.
    #[error("Content-Length is required")]
    LengthRequired,
}

impl ImportError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidMapping(_) => "invalid_mapping",
            Self::InvalidHeader => "invalid_header",
            Self::UntrustedSource => "untrusted_source",
            Self::LengthRequired => "length_required",
        }
    }
}

/// Why one row was not imported: its number (the header is row 1), the column, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based row number in the file, the header being row 1.
    pub row: u64,
    /// The column, or `-` for the row as a whole.
    pub column: String,
    /// Stable code.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

/// One record of a CSV: its fields.
pub type Record = Vec<String>;

/// The complete records in `bytes` (a chunk read from a record boundary) and how many bytes
/// they take. At the end of the file (`at_end`) the last record needs no line break; before
/// it, a record the chunk cuts off is left for the next chunk. RFC 4180: fields in double
/// quotes may hold commas, quotes (doubled) and line breaks; CRLF or LF ends a record; blank
/// lines are skipped. A field past [`MAX_FIELD_BYTES`] is cut there.
pub fn records(bytes: &[u8], at_end: bool) -> (Vec<Record>, usize) {
    parse(bytes, at_end, usize::MAX)
}

/// The file's header (its first record: unique, non-empty column names, at most
/// [`MAX_COLUMNS`]) and the bytes it takes, from the file's first chunk.
pub fn header(first: &[u8], at_end: bool) -> Result<(Vec<String>, usize), ImportError> {
    // Excel's "CSV UTF-8" starts with a byte order mark.
    let bom = if first.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    let (mut records, used) = parse(&first[bom..], at_end, 1);
    let used = used + bom;
    let header: Vec<String> = records
        .pop()
        .ok_or(ImportError::InvalidHeader)?
        .into_iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let unique: std::collections::HashSet<&String> = header.iter().collect();
    if header.len() > MAX_COLUMNS
        || unique.len() != header.len()
        || header.iter().any(String::is_empty)
    {
        return Err(ImportError::InvalidHeader);
    }
    Ok((header, used))
}

/// [`records`], at most `max` of them (an import step's share).
pub fn records_at_most(bytes: &[u8], at_end: bool, max: usize) -> (Vec<Record>, usize) {
    parse(bytes, at_end, max)
}

fn parse(bytes: &[u8], at_end: bool, max: usize) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let mut quoted = false;
    let mut i = 0;
    let finish = |fields: &mut Vec<Vec<u8>>, field: &mut Vec<u8>| {
        fields.push(std::mem::take(field));
        std::mem::take(fields)
            .into_iter()
            .map(|f| String::from_utf8_lossy(&f).into_owned())
            .collect::<Record>()
    };
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    push(&mut field, b'"');
                    i += 1;
                } else {
                    quoted = false;
                }
            } else {
                push(&mut field, b);
            }
        } else {
            match b {
                // A quote opens a quoted field at its start, after spaces too (`1, "a, b"`).
                b'"' if field.iter().all(|&c| c == b' ') => {
                    field.clear();
                    quoted = true;
                }
                b',' => fields.push(std::mem::take(&mut field)),
                b'\n' | b'\r' => {
                    let end = if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                        i + 1
                    } else {
                        i
                    };
                    let record = finish(&mut fields, &mut field);
                    i = end;
                    consumed = end + 1;
                    // Blank lines, whitespace and filler rows (`,,,`) are no rows.
                    if !record.iter().all(|f| f.trim().is_empty()) {
                        out.push(record);
                        if out.len() == max {
                            return (out, consumed);
                        }
                    }
                }
                _ => push(&mut field, b),
            }
        }
        i += 1;
    }
    if at_end && !quoted {
        let record = finish(&mut fields, &mut field);
        if !record.iter().all(|f| f.trim().is_empty()) {
            out.push(record);
        }
        consumed = bytes.len();
    }
    (out, consumed)
}

fn push(field: &mut Vec<u8>, b: u8) {
    if field.len() < MAX_FIELD_BYTES {
        field.push(b);
    }
}

/// Where a value comes from: a column, or a constant.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Column(usize, String),
    Constant(String),
}

/// How a column's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Number,
    Boolean,
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    from: Source,
    kind: Kind,
}

/// A validated column mapping: which columns make the event.
///
/// ```json
/// {"type": "track", "event": "Order Completed", "key": "order_no",
///  "userId": "customer_id", "timestamp": "ordered_at",
///  "properties": {"order_id": "order_no", "revenue": {"column": "total", "type": "number"}}}
/// ```
/// `type` is `identify` or `track`; `event` (track) is a name or `{"column"}`; `key` names the
/// column that makes each row unique (with the type, the event name and an optional
/// `namespace`: a row's message ID derives from them); `userId`, `anonymousId` and `timestamp` name columns;
/// `traits` and `properties` map names to columns (`"col"`, or `{"column", "type": "text" |
/// "number" | "boolean"}`). A row needs `userId` or `anonymousId`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    identify: bool,
    event: Option<Source>,
    key: usize,
    user_id: Option<usize>,
    anonymous_id: Option<usize>,
    timestamp: Option<usize>,
    fields: Vec<Field>,
    header: Vec<String>,
    namespace: String,
}

impl Mapping {
    /// Validates `mapping` against the file's `header`.
    pub fn parse(mapping: &Value, header: &[String]) -> Result<Self, ImportError> {
        if header.is_empty()
            || header.len() > MAX_COLUMNS
            || header.iter().any(|h| h.trim().is_empty())
        {
            return Err(ImportError::InvalidHeader);
        }
        let bad = |m: &str| ImportError::InvalidMapping(m.to_owned());
        let m = mapping
            .as_object()
            .ok_or_else(|| bad("must be an object"))?;
        let known = [
            "type",
            "event",
            "namespace",
            "key",
            "userId",
            "anonymousId",
            "timestamp",
            "traits",
            "properties",
        ];
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(&format!("{k} is not a known field")));
        }
        let column = |name: &str, field: &str| -> Result<usize, ImportError> {
            header
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| bad(&format!("{field}: the file has no column {name}")))
        };
        let named = |field: &str| -> Result<Option<usize>, ImportError> {
            match m.get(field) {
                None => Ok(None),
                Some(Value::String(name)) => column(name, field).map(Some),
                Some(_) => Err(bad(&format!("{field} must name a column"))),
            }
        };
        let identify = match m.get("type").and_then(Value::as_str) {
            Some("identify") => true,
            Some("track") => false,
            _ => return Err(bad("type must be identify or track")),
        };
        let event = match (identify, m.get("event")) {
            (true, None) => None,
            (true, Some(_)) => return Err(bad("event is for track only")),
            (false, Some(Value::String(name))) if !name.trim().is_empty() => {
                Some(Source::Constant(name.clone()))
            }
            (false, Some(Value::Object(o))) => match o.get("column").and_then(Value::as_str) {
                Some(name) => Some(Source::Column(column(name, "event")?, name.to_owned())),
                None => return Err(bad("event: {\"column\"} must name a column")),
            },
            (false, _) => return Err(bad("track needs event: a name or {\"column\"}")),
        };
        let key =
            named("key")?.ok_or_else(|| bad("key must name the column that makes a row unique"))?;
        let (user_id, anonymous_id) = (named("userId")?, named("anonymousId")?);
        if user_id.is_none() && anonymous_id.is_none() {
            return Err(bad("userId or anonymousId must name a column"));
        }
        let mut fields = Vec::new();
        let part = if identify { "traits" } else { "properties" };
        let other = if identify { "properties" } else { "traits" };
        if m.contains_key(other) {
            return Err(bad(&format!(
                "{other} is not for {}",
                if identify { "identify" } else { "track" }
            )));
        }
        if let Some(map) = m.get(part) {
            let map = map
                .as_object()
                .ok_or_else(|| bad(&format!("{part} must be an object")))?;
            for (name, spec) in map {
                let (col, kind) = match spec {
                    Value::String(c) => (c.as_str(), Kind::Text),
                    Value::Object(o) => {
                        let c = o.get("column").and_then(Value::as_str).ok_or_else(|| {
                            bad(&format!("{part}.{name}: {{\"column\"}} must name a column"))
                        })?;
                        let kind = match o.get("type").and_then(Value::as_str) {
                            None | Some("text") => Kind::Text,
                            Some("number") => Kind::Number,
                            Some("boolean") => Kind::Boolean,
                            Some(_) => {
                                return Err(bad(&format!(
                                    "{part}.{name}: type must be text, number or boolean"
                                )))
                            }
                        };
                        (c, kind)
                    }
                    _ => return Err(bad(&format!("{part}.{name} must name a column"))),
                };
                fields.push(Field {
                    name: name.clone(),
                    from: Source::Column(column(col, &format!("{part}.{name}"))?, col.to_owned()),
                    kind,
                });
            }
        }
        Ok(Self {
            identify,
            event,
            key,
            user_id,
            anonymous_id,
            timestamp: named("timestamp")?,
            fields,
            header: header.to_vec(),
            namespace: match m.get("namespace") {
                None => String::new(),
                Some(Value::String(n)) if n.len() <= 100 => n.clone(),
                Some(_) => return Err(bad("namespace must be text (at most 100 characters)")),
            },
        })
    }

    /// The event of `record` (row number `row`), or why not.
    pub fn event(&self, record: &[String], row: u64) -> Result<Value, RowError> {
        let error = |column: &str, code: &str, message: String| RowError {
            row,
            column: column.to_owned(),
            code: code.to_owned(),
            message,
        };
        if record.len() != self.header.len() {
            return Err(error(
                "-",
                "wrong_column_count",
                format!(
                    "{} fields where the header has {}",
                    record.len(),
                    self.header.len()
                ),
            ));
        }
        let cell = |i: usize| record[i].trim();
        let name = |i: usize| self.header[i].trim();
        let key = cell(self.key);
        if key.is_empty() {
            return Err(error(
                name(self.key),
                "missing_key",
                "the row's key is empty".into(),
            ));
        }
        let mut event = Map::new();
        let kind = if self.identify { "identify" } else { "track" };
        event.insert("type".into(), json!(kind));
        // The row's identity: what it is (type, event name, the mapping's namespace) and its key.
        // Two exports keyed by the same column (orders and returns by order_no) stay apart.
        let event_name = match &self.event {
            Some(Source::Constant(n)) => n.as_str(),
            Some(Source::Column(i, _)) => cell(*i),
            None => "",
        };
        let mut id = Sha256::new();
        for part in [
            kind,
            event_name,
            &self.namespace,
            self.header[self.key].trim(),
            key,
        ] {
            id.update(part.as_bytes());
            id.update([0]);
        }
        let digest = id.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        event.insert("messageId".into(), json!(format!("import-{hex}")));
        for (field, column) in [("userId", self.user_id), ("anonymousId", self.anonymous_id)] {
            if let Some(i) = column.filter(|&i| !cell(i).is_empty()) {
                event.insert(field.into(), json!(cell(i)));
            }
        }
        if !event.contains_key("userId") && !event.contains_key("anonymousId") {
            let column = self.user_id.or(self.anonymous_id).map_or("-", name);
            return Err(error(
                column,
                "missing_id",
                "no user ID or anonymous ID".into(),
            ));
        }
        if let Some(i) = self.timestamp.filter(|&i| !cell(i).is_empty()) {
            event.insert("timestamp".into(), json!(cell(i)));
        }
        match &self.event {
            Some(Source::Constant(n)) => {
                event.insert("event".into(), json!(n));
            }
            Some(Source::Column(i, column)) => {
                if cell(*i).is_empty() {
                    return Err(error(
                        column,
                        "missing_event_name",
                        "the event name is empty".into(),
                    ));
                }
                event.insert("event".into(), json!(cell(*i)));
            }
            None => {}
        }
        let mut values = Map::new();
        for f in &self.fields {
            let Source::Column(i, column) = &f.from else {
                continue;
            };
            let text = cell(*i);
            if text.is_empty() {
                continue;
            }
            let value = match f.kind {
                Kind::Text => json!(text),
                Kind::Number => match text.parse::<f64>() {
                    Ok(n) if n.is_finite() => json!(n),
                    _ => {
                        return Err(error(
                            column,
                            "not_a_number",
                            format!("{text:?} is not a number"),
                        ))
                    }
                },
                Kind::Boolean => match text.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => json!(true),
                    "false" | "no" | "0" => json!(false),
                    _ => {
                        return Err(error(
                            column,
                            "not_a_boolean",
                            format!("{text:?} is not true or false"),
                        ))
                    }
                },
            };
            values.insert(f.name.clone(), value);
        }
        if !values.is_empty() {
            let part = if self.identify {
                "traits"
            } else {
                "properties"
            };
            event.insert(part.into(), Value::Object(values));
        }
        Ok(Value::Object(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_quoted_fields_and_leaves_a_cut_record_for_the_next_chunk() {
        let text =
            b"id,name,note\r\n1,Ann,\"says \"\"hi\"\", twice\"\n\n2,Bo,\"two\nlines\"\n3,Cy,cut";
        let (rows, used) = records(text, false);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], strings(&["1", "Ann", "says \"hi\", twice"]));
        assert_eq!(rows[2], strings(&["2", "Bo", "two\nlines"]));
        assert_eq!(&text[used..], b"3,Cy,cut");
        let (rest, used) = records(&text[text.len() - 8..], true);
        assert_eq!((rest, used), (vec![strings(&["3", "Cy", "cut"])], 8));
        let (none, used) = records(b"4,\"open", false);
        assert!(none.is_empty());
        assert_eq!(used, 0);
        assert_eq!(records(b"5,x\n\n", true), (vec![strings(&["5", "x"])], 5));
        assert_eq!(
            records(b"5,x\n  \n,,\n", true),
            (vec![strings(&["5", "x"])], 10),
            "filler is no row"
        );
        assert_eq!(
            records(b"1, \"Smith, John\"\n", false).0,
            vec![strings(&["1", "Smith, John"])]
        );
    }

    fn orders() -> Mapping {
        let header = strings(&["order_no", "customer", "total", "placed", "gift"]);
        let mapping = json!({"type": "track", "event": "Order Completed", "key": "order_no",
            "userId": "customer", "timestamp": "placed",
            "properties": {"order_id": "order_no", "revenue": {"column": "total", "type": "number"},
                           "gift": {"column": "gift", "type": "boolean"}}});
        Mapping::parse(&mapping, &header).unwrap()
    }

    #[test]
    fn a_row_becomes_an_event_with_a_message_id_from_its_key() {
        let m = orders();
        let e = m
            .event(
                &strings(&["A-1", "c-9", "42.50", "2026-11-01T10:00:00Z", "no"]),
                2,
            )
            .unwrap();
        assert_eq!(e["event"], "Order Completed");
        assert_eq!(e["userId"], "c-9");
        assert_eq!(e["properties"]["revenue"], 42.5);
        assert_eq!(e["properties"]["gift"], false);
        assert_eq!(e["properties"]["order_id"], "A-1");
        let again = m.event(&strings(&["A-1", "c-9", "40", "", ""]), 7).unwrap();
        assert_eq!(
            e["messageId"], again["messageId"],
            "the key alone names the event"
        );
        let other = m.event(&strings(&["A-2", "c-9", "40", "", ""]), 8).unwrap();
        assert_ne!(e["messageId"], other["messageId"]);
        let header = strings(&["order_no", "customer", "total", "placed", "gift"]);
        let returns = Mapping::parse(&json!({"type": "track", "event": "Order Refunded", "key": "order_no", "userId": "customer"}), &header).unwrap();
        let refund = returns
            .event(&strings(&["A-1", "c-9", "42.50", "", ""]), 2)
            .unwrap();
        assert_ne!(
            e["messageId"], refund["messageId"],
            "another export keyed by the same column"
        );
    }

    #[test]
    fn a_bad_row_names_its_row_and_column() {
        let m = orders();
        let err = |r: &[&str]| m.event(&strings(r), 5).map(|_| ()).unwrap_err();
        let e = err(&["A-1", "c-9", "lots", "", ""]);
        assert_eq!(
            (e.row, e.column.as_str(), e.code.as_str()),
            (5, "total", "not_a_number")
        );
        assert_eq!(err(&["", "c-9", "1", "", ""]).column, "order_no");
        assert_eq!(err(&["A-1", "", "1", "", ""]).code, "missing_id");
        assert_eq!(err(&["A-1", "c"]).code, "wrong_column_count");
        assert_eq!(err(&["A-1", "c-9", "1", "", "maybe"]).code, "not_a_boolean");
    }

    #[test]
    fn the_header_is_the_first_record_and_names_each_column_once() {
        assert_eq!(
            header(b"id, email\r\n1,a\n", false),
            Ok((strings(&["id", "email"]), 11))
        );
        assert_eq!(
            header(b"id,email", true),
            Ok((strings(&["id", "email"]), 8))
        );
        assert_eq!(header(b"id,id\n", false), Err(ImportError::InvalidHeader));
        assert_eq!(header(b"id,,x\n", false), Err(ImportError::InvalidHeader));
        assert_eq!(
            header(b"id,email", false),
            Err(ImportError::InvalidHeader),
            "cut off"
        );
    }

    #[test]
    fn a_mapping_is_checked_against_the_header() {
        let header = strings(&["id", "email"]);
        let parse = |m: Value| {
            Mapping::parse(&m, &header)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(parse(
            json!({"type": "identify", "key": "id", "userId": "id", "traits": {"email": "email"}})
        )
        .is_ok());
        assert!(
            parse(json!({"type": "identify", "key": "id", "userId": "nope"}))
                .unwrap_err()
                .contains("no column nope")
        );
        assert!(parse(json!({"type": "track", "key": "id", "userId": "id"}))
            .unwrap_err()
            .contains("needs event"));
        assert!(parse(json!({"type": "identify", "key": "id"}))
            .unwrap_err()
            .contains("userId or anonymousId"));
        assert!(
            parse(json!({"type": "identify", "key": "id", "userId": "id", "extra": 1}))
                .unwrap_err()
                .contains("extra")
        );
        assert_eq!(
            Mapping::parse(&json!({}), &strings(&["", "x"])).map(|_| ()),
            Err(ImportError::InvalidHeader)
        );
    }
}
