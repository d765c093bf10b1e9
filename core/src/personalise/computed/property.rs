//! Reading event properties by path (`a.b`, `products[].product_id`), and the loose value
//! tests that traits, segment rules and recommendations share (shops send numbers as strings and
//! IDs as numbers).

use serde_json::{Map, Value};

use super::MAX_PATH_VALUES;

/// The value at `path` in `properties`; a `[]` segment collects from every element (at most
/// [`MAX_PATH_VALUES`]) into an array. `Null` when absent.
pub fn extract(properties: &Map<String, Value>, path: &str) -> Value {
    fn walk<'a>(value: &'a Value, segments: &[&str], out: &mut Vec<&'a Value>) {
        let Some((first, rest)) = segments.split_first() else {
            if !value.is_null() && out.len() < MAX_PATH_VALUES {
                out.push(value);
            }
            return;
        };
        let (name, each) = match first.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*first, false),
        };
        let Some(next) = value.get(name) else { return };
        if each {
            for item in next.as_array().into_iter().flatten() {
                walk(item, rest, out);
            }
        } else {
            walk(next, rest, out);
        }
    }
    let segments: Vec<&str> = path.split('.').collect();
    let mut found = Vec::new();
    let root = Value::Object(properties.clone());
    walk(&root, &segments, &mut found);
    if path.contains("[]") {
        if found.is_empty() {
            Value::Null
        } else {
            Value::Array(found.into_iter().cloned().collect())
        }
    } else {
        found.first().map_or(Value::Null, |v| (*v).clone())
    }
}

/// The values a fact holds for `path`: the elements for `[]` paths, else the one value.
pub(super) fn values_at<'a>(
    props: &'a Map<String, Value>,
    path: &str,
) -> impl Iterator<Item = &'a Value> {
    let held = props.get(path);
    let many = path.contains("[]");
    let list: Vec<&Value> = match held {
        Some(Value::Array(items)) if many => items.iter().collect(),
        Some(v) if !v.is_null() => vec![v],
        _ => Vec::new(),
    };
    list.into_iter()
}

/// A number, or a string holding one (some shops send prices as strings).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// Strings and numbers as text (IDs arrive as either).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Present: not null, not an empty (or blank) string, list or object (`exists` in segment rules).
pub fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// `true`, a non-zero number, a non-empty string/array/object.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_nested_and_every_element_paths() {
        let props = json!({"products": [{"product_id": "a"}, {"sku": "b"}, {"product_id": 7}], "a": {"b": 1}});
        let props = props.as_object().unwrap();
        assert_eq!(extract(props, "products[].product_id"), json!(["a", 7]));
        assert_eq!(extract(props, "a.b"), json!(1));
        assert_eq!(extract(props, "missing[].x"), Value::Null);
    }
}
