//! The product catalogue: items as the decision path renders them, learnt from `Product
//! Viewed` properties or uploaded by an admin, and their upserts (ordered by event time, so a
//! late event cannot roll a product back).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{MAX_FIELD_CHARS, MAX_UPLOAD_ITEMS, PRODUCT_VIEWED};
use crate::collect::event::{Event, EventType};
use crate::personalise::computed::{number, scalar_text};
use crate::plan::{multi_row, Param, Statement};

/// A product as the decision path renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// `product_id` (or `sku` when there is none).
    pub product_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Currency of the price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Product page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

impl CatalogItem {
    /// An item from Segment product properties; `None` without a `product_id`/`sku`.
    pub fn from_properties(props: &Map<String, Value>) -> Option<Self> {
        let text = |key: &str| {
            props
                .get(key)
                .and_then(scalar_text)
                .map(|s| s.trim().chars().take(MAX_FIELD_CHARS).collect::<String>())
                .filter(|s| !s.is_empty())
        };
        Some(Self {
            product_id: text("product_id").or_else(|| text("sku"))?,
            name: text("name"),
            category: text("category"),
            brand: text("brand"),
            price: props.get("price").and_then(number),
            currency: text("currency"),
            url: text("url"),
            image_url: text("image_url"),
        })
    }

    /// The item a `Product Viewed` event describes.
    pub fn from_event(event: &Event) -> Option<Self> {
        if event.kind != EventType::Track || event.name.as_deref() != Some(PRODUCT_VIEWED) {
            return None;
        }
        Self::from_properties(event.body.get("properties")?.as_object()?)
    }

    /// Parses a stored `catalog_items.body`.
    pub fn from_json_str(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }
}

/// A mistake in a catalogue upload: names the item (index) and the field. Stable `code()`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Not `{"items": [...]}` or a list.
    #[error("catalogue upload must be a list of items or {{\"items\": [...]}} (at most {MAX_UPLOAD_ITEMS})")]
    Malformed,
    /// An item is not usable.
    #[error("catalogue item {index}: {field} {problem}")]
    InvalidItem {
        /// Position in the upload.
        index: usize,
        field: &'static str,
        problem: &'static str,
    },
}

impl CatalogError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "invalid_catalog",
            Self::InvalidItem { .. } => "invalid_catalog_item",
        }
    }
}

/// Validates an admin catalogue upload (Segment product properties per item). One bad item
/// rejects the upload, naming it, so a half-applied catalogue never happens.
pub fn catalog_from_json(upload: &Value) -> Result<Vec<CatalogItem>, CatalogError> {
    let list = match upload {
        Value::Array(items) => items,
        Value::Object(o) => o
            .get("items")
            .and_then(Value::as_array)
            .ok_or(CatalogError::Malformed)?,
        _ => return Err(CatalogError::Malformed),
    };
    if list.len() > MAX_UPLOAD_ITEMS {
        return Err(CatalogError::Malformed);
    }
    list.iter()
        .enumerate()
        .map(|(index, item)| {
            let invalid = |field, problem| CatalogError::InvalidItem {
                index,
                field,
                problem,
            };
            let props = item
                .as_object()
                .ok_or(invalid("item", "must be an object"))?;
            if props
                .get("price")
                .is_some_and(|p| !p.is_null() && number(p).is_none())
            {
                return Err(invalid("price", "must be a number"));
            }
            CatalogItem::from_properties(props).ok_or(invalid("product_id", "is required"))
        })
        .collect()
}

/// Writes an admin upload: each row replaces what is stored and is marked uploaded, whatever
/// events said before and whatever time they claimed.
pub fn upsert_catalog(items: &[CatalogItem], at_ms: i64) -> Vec<Statement> {
    multi_row(
        "INSERT INTO catalog_items (product_id, category, body, updated_at, uploaded) VALUES ",
        " ON CONFLICT (product_id) DO UPDATE SET category = excluded.category, \
          body = excluded.body, updated_at = excluded.updated_at, uploaded = 1",
        items
            .iter()
            .map(|item| {
                let mut row = row(item, at_ms);
                row.push(Param::Int(1));
                row
            })
            .collect(),
        &[],
    )
}

/// The body and category an event's row leaves: its own on an event-made row; on an uploaded
/// row the upload's, with only the fields the upload left unset filled from the event
/// (`json_patch` lets the stored upload override the event's body).
const EVENT_BODY: &str = "CASE WHEN catalog_items.uploaded = 1 \
    THEN json_patch(excluded.body, catalog_items.body) ELSE excluded.body END";
const EVENT_CATEGORY: &str = "CASE WHEN catalog_items.uploaded = 1 \
    THEN coalesce(catalog_items.category, excluded.category) ELSE excluded.category END";

/// Writes items seen in events, each at its (receive-clamped) event time: a later event's row
/// replaces an earlier one's; an uploaded row only gains fields it lacks. A write that would
/// change nothing is skipped, so it reports no change (and drops no cached listing).
pub(super) fn catalog_writes<'a>(
    items: impl Iterator<Item = (&'a CatalogItem, i64)>,
) -> Vec<Statement> {
    let suffix = format!(
        " ON CONFLICT (product_id) DO UPDATE SET category = {EVENT_CATEGORY}, \
          body = {EVENT_BODY}, \
          updated_at = CASE WHEN catalog_items.uploaded = 1 \
            THEN catalog_items.updated_at ELSE excluded.updated_at END \
          WHERE (catalog_items.uploaded = 1 OR excluded.updated_at >= catalog_items.updated_at) \
          AND (({EVENT_BODY}) IS NOT catalog_items.body \
            OR ({EVENT_CATEGORY}) IS NOT catalog_items.category)"
    );
    multi_row(
        "INSERT INTO catalog_items (product_id, category, body, updated_at) VALUES ",
        &suffix,
        items.map(|(item, at_ms)| row(item, at_ms)).collect(),
        &[],
    )
}

fn row(item: &CatalogItem, at_ms: i64) -> Vec<Param> {
    vec![
        Param::Text(item.product_id.clone()),
        Param::from(item.category.as_ref()),
        Param::Text(serde_json::to_string(item).unwrap_or_else(|_| "{}".into())),
        Param::Int(at_ms),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn catalogue_upload_names_the_bad_item_and_field() {
        let ok =
            catalog_from_json(&json!({"items": [{"product_id": "a", "price": 3}, {"sku": 7}]}))
                .unwrap();
        assert_eq!(ok[1].product_id, "7");
        let e = catalog_from_json(&json!([{"product_id": "a"}, {"name": "no id"}])).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (
                "invalid_catalog_item",
                "catalogue item 1: product_id is required"
            )
        );
        let e = catalog_from_json(&json!([{"product_id": "a", "price": "cheap"}])).unwrap_err();
        assert_eq!(
            e,
            CatalogError::InvalidItem {
                index: 0,
                field: "price",
                problem: "must be a number"
            }
        );
        assert_eq!(
            catalog_from_json(&json!("x")).unwrap_err().code(),
            "invalid_catalog"
        );
    }
}
