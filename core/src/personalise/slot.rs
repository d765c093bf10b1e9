//! Slots: the places on a page that decisions fill (`<div data-seam-slot="...">`), declared in
//! `config/slots.json`. A `recommendations` slot renders items through two small templates; a
//! `banner` slot shows the first variant whose segment condition the profile meets (a
//! discount banner for discount-sensitive cart abandoners), or nothing.
//!
//! Templates are a tiny, logic-less subset of Mustache: `{{field}}` (always HTML-escaped) and
//! `{{#field}}...{{/field}}` (rendered only when the field is non-empty). Field names are
//! checked when the document loads, so a typo is an error naming the slot and the field, not an
//! empty hole on every page. Values never become markup: an item's name `<script>` renders as
//! text, and link fields accept only relative or http(s) URLs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::personalise::recommend::CatalogItem;
use crate::personalise::segment::SegmentSet;

/// Items a recommendations slot shows unless the request asks otherwise.
pub const DEFAULT_LIMIT: usize = 4;
/// Most items a slot may show.
pub const MAX_LIMIT: usize = 20;
const MAX_SLOTS: usize = 50;
const MAX_TEMPLATE: usize = 8 * 1024;
const MAX_VARIANTS: usize = 20;
/// The slot name used when a page or request names a slot the configuration does not declare.
pub const RECOMMENDED: &str = "recommended-for-you";

const DEFAULT_TEMPLATE: &str = "<h2>{{title}}</h2><ul class=\"seam-recs\">{{items}}</ul>";
const DEFAULT_ITEM_TEMPLATE: &str = "<li data-product-id=\"{{product_id}}\"><a href=\"{{url}}\">\
    {{name}}</a>{{#category}}<span class=\"seam-cat\">{{category}}</span>{{/category}}\
    {{#price}}<span class=\"seam-price\">{{price}}</span>{{/price}}</li>";
const DEFAULT_TITLE: &str = "Recommended for you";

/// Fields an item template may use.
const ITEM_FIELDS: [&str; 9] = [
    "product_id",
    "name",
    "url",
    "category",
    "brand",
    "price",
    "currency",
    "image_url",
    "reason",
];
/// Fields a slot template may use (`items` is the rendered items, inserted as markup).
const SLOT_FIELDS: [&str; 3] = ["title", "items", "slot"];
/// Fields that are links: only relative or http(s) URLs are rendered.
const URL_FIELDS: [&str; 2] = ["url", "image_url"];

/// A mistake in `slots.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotConfigError {
    /// A field of a slot is wrong.
    #[error("slot {slot}: {field} {problem}")]
    Invalid {
        /// The slot's name (`-` for the document itself).
        slot: String,
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl SlotConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "invalid_slot_config"
    }
}

fn invalid(slot: &str, field: &str, problem: impl Into<String>) -> SlotConfigError {
    SlotConfigError::Invalid {
        slot: slot.to_owned(),
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
    Section(String, Vec<Part>),
}

impl Template {
    /// Parses `text`, accepting only `fields`.
    pub fn parse(text: &str, fields: &[&str]) -> Result<Self, String> {
        if text.len() > MAX_TEMPLATE {
            return Err(format!("is longer than {MAX_TEMPLATE} bytes"));
        }
        // A stack of open sections: (name, parts so far).
        let mut stack: Vec<(String, Vec<Part>)> = vec![(String::new(), Vec::new())];
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let (before, after) = rest.split_at(start);
            if let Some((_, parts)) = stack.last_mut() {
                if !before.is_empty() {
                    parts.push(Part::Text(before.to_owned()));
                }
            }
            let end = after
                .find("}}")
                .ok_or_else(|| "has a {{ without }}".to_owned())?;
            let tag = after[2..end].trim();
            rest = &after[end + 2..];
            let (kind, name) = match tag.chars().next() {
                Some(c @ ('#' | '/')) => (Some(c), tag[1..].trim()),
                _ => (None, tag),
            };
            if !fields.contains(&name) {
                return Err(format!(
                    "uses {{{{{name}}}}}; known fields: {}",
                    fields.join(", ")
                ));
            }
            match kind {
                Some('#') => {
                    if stack.len() > 4 {
                        return Err("nests sections more than 3 deep".into());
                    }
                    stack.push((name.to_owned(), Vec::new()));
                }
                Some(_) => match stack.pop() {
                    Some((open, parts)) if open == name && !stack.is_empty() => {
                        if let Some((_, outer)) = stack.last_mut() {
                            outer.push(Part::Section(open, parts));
                        }
                    }
                    _ => return Err(format!("closes {{{{/{name}}}}} that is not open")),
                },
                None => {
                    if let Some((_, parts)) = stack.last_mut() {
                        parts.push(Part::Field(name.to_owned()));
                    }
                }
            }
        }
        if stack.len() != 1 {
            return Err("leaves a {{#section}} unclosed".into());
        }
        let Some((_, mut parts)) = stack.pop() else {
            return Err("is empty".into());
        };
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Renders with `value` for fields: every value is escaped except `raw` fields (markup this
    /// module rendered itself); unsafe links render as nothing.
    pub fn render(&self, value: &dyn Fn(&str) -> Option<String>, raw: &[&str]) -> String {
        let mut out = String::new();
        render_parts(&self.parts, value, raw, &mut out);
        out
    }
}

fn render_parts(
    parts: &[Part],
    value: &dyn Fn(&str) -> Option<String>,
    raw: &[&str],
    out: &mut String,
) {
    let field = |name: &str| {
        value(name)
            .filter(|v| !v.is_empty())
            .filter(|v| !URL_FIELDS.contains(&name) || is_safe_url(v))
    };
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Field(name) => match field(name) {
                Some(v) if raw.contains(&name.as_str()) => out.push_str(&v),
                Some(v) => out.push_str(&escape(&v)),
                None => {}
            },
            Part::Section(name, inner) => {
                if field(name).is_some() {
                    render_parts(inner, value, raw, out);
                }
            }
        }
    }
}

/// What a slot shows.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotKind {
    /// Product recommendations.
    Recommendations {
        /// Items shown.
        limit: usize,
        /// The heading (`{{title}}`).
        title: String,
        /// The slot's markup around `{{items}}`.
        template: Template,
        /// One item's markup.
        item_template: Template,
    },
    /// The first variant whose condition holds, or nothing.
    Banner {
        /// Variants in order.
        variants: Vec<BannerVariant>,
    },
}

/// One banner variant: shown to profiles in all of `all`, in at least one of `any` (when given),
/// and in none of `none`.
#[derive(Debug, Clone, PartialEq)]
pub struct BannerVariant {
    /// Variant name (reported as the decision's variant).
    pub name: String,
    /// Segments the profile must be in, all of them.
    pub all: Vec<String>,
    /// Segments the profile must be in, one of them (empty: no condition).
    pub any: Vec<String>,
    /// Segments the profile must not be in.
    pub none: Vec<String>,
    /// The banner's markup (configuration, trusted like a template).
    pub html: String,
}

impl BannerVariant {
    /// Whether a profile in `segments` sees this variant.
    pub fn matches(&self, segments: &BTreeSet<String>) -> bool {
        self.all.iter().all(|s| segments.contains(s))
            && (self.any.is_empty() || self.any.iter().any(|s| segments.contains(s)))
            && !self.none.iter().any(|s| segments.contains(s))
    }
}

/// A validated `slots.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotConfig {
    slots: BTreeMap<String, SlotKind>,
    fallback: SlotKind,
}

impl Default for SlotConfig {
    fn default() -> Self {
        Self {
            slots: BTreeMap::new(),
            fallback: default_recommendations(),
        }
    }
}

fn default_recommendations() -> SlotKind {
    let parse = |t: &str, f: &[&str]| Template::parse(t, f).unwrap_or(Template { parts: vec![] });
    SlotKind::Recommendations {
        limit: DEFAULT_LIMIT,
        title: DEFAULT_TITLE.into(),
        template: parse(DEFAULT_TEMPLATE, &SLOT_FIELDS),
        item_template: parse(DEFAULT_ITEM_TEMPLATE, &ITEM_FIELDS),
    }
}

impl SlotConfig {
    /// Parses and validates `{"slots": {"name": {...}}}`; banner conditions must name declared
    /// segments (`interested_in:Shoes` for a `forEach` segment).
    pub fn from_json(value: &Value, segments: &SegmentSet) -> Result<Self, SlotConfigError> {
        let doc = value
            .as_object()
            .ok_or_else(|| invalid("-", "document", "must be an object"))?;
        if let Some(k) = doc.keys().find(|k| *k != "slots") {
            return Err(invalid("-", k, "is not a known field"));
        }
        let raw = match doc.get("slots") {
            None => return Ok(Self::default()),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(invalid("-", "slots", "must be an object")),
        };
        if raw.len() > MAX_SLOTS {
            return Err(invalid("-", "slots", format!("has more than {MAX_SLOTS}")));
        }
        let mut slots = BTreeMap::new();
        for (name, def) in raw {
            if !valid_slot_name(name) {
                return Err(invalid(
                    name,
                    "name",
                    "must be 1-64 letters, digits, '-' or '_'",
                ));
            }
            slots.insert(name.clone(), parse_slot(name, def, segments)?);
        }
        Ok(Self {
            slots,
            fallback: default_recommendations(),
        })
    }

    /// The slot's definition: declared, else a recommendations slot with the default templates.
    pub fn get(&self, name: &str) -> &SlotKind {
        self.slots.get(name).unwrap_or(&self.fallback)
    }

    /// Whether a slot is declared.
    pub fn declares(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    /// The declared recommendation slots, by name.
    pub fn recommendation_slots(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|(_, kind)| matches!(kind, SlotKind::Recommendations { .. }))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// Slot names as pages and requests may use them: the names traits and segments use.
pub fn valid_slot_name(name: &str) -> bool {
    crate::personalise::computed::valid_name(name)
}

fn parse_slot(name: &str, def: &Value, segments: &SegmentSet) -> Result<SlotKind, SlotConfigError> {
    let def = def
        .as_object()
        .ok_or_else(|| invalid(name, "definition", "must be an object"))?;
    let text = |field: &str| -> Result<Option<&str>, SlotConfigError> {
        match def.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(name, field, "must be a string")),
        }
    };
    let known: &[&str] = match text("type")? {
        Some("recommendations") => &["type", "limit", "title", "template", "itemTemplate"],
        Some("banner") => &["type", "variants"],
        Some(other) => {
            return Err(invalid(
                name,
                "type",
                format!("{other:?} is not recommendations or banner"),
            ))
        }
        None => return Err(invalid(name, "type", "is missing")),
    };
    if let Some(k) = def.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(name, k, "is not a known field"));
    }
    if text("type")? == Some("banner") {
        let variants = match def.get("variants") {
            Some(Value::Array(v)) if !v.is_empty() && v.len() <= MAX_VARIANTS => v,
            _ => {
                return Err(invalid(
                    name,
                    "variants",
                    format!("must be a list of 1-{MAX_VARIANTS} variants"),
                ))
            }
        };
        let variants = variants
            .iter()
            .enumerate()
            .map(|(i, v)| parse_variant(name, i, v, segments))
            .collect::<Result<_, _>>()?;
        return Ok(SlotKind::Banner { variants });
    }
    let limit = match def.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_LIMIT as u64).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| invalid(name, "limit", format!("must be 1-{MAX_LIMIT}")))?,
    };
    let template = |field: &str, default: &str, fields: &[&str]| {
        let source = text(field)?.unwrap_or(default);
        Template::parse(source, fields).map_err(|p| invalid(name, field, p))
    };
    Ok(SlotKind::Recommendations {
        limit,
        title: text("title")?.unwrap_or(DEFAULT_TITLE).to_owned(),
        template: template("template", DEFAULT_TEMPLATE, &SLOT_FIELDS)?,
        item_template: template("itemTemplate", DEFAULT_ITEM_TEMPLATE, &ITEM_FIELDS)?,
    })
}

fn parse_variant(
    slot: &str,
    index: usize,
    value: &Value,
    segments: &SegmentSet,
) -> Result<BannerVariant, SlotConfigError> {
    let at = |field: &str| format!("variants[{index}].{field}");
    let v = value
        .as_object()
        .ok_or_else(|| invalid(slot, &format!("variants[{index}]"), "must be an object"))?;
    if let Some(k) = v
        .keys()
        .find(|k| !["name", "when", "html"].contains(&k.as_str()))
    {
        return Err(invalid(slot, &at(k), "is not a known field"));
    }
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_slot_name(n))
        .ok_or_else(|| {
            invalid(
                slot,
                &at("name"),
                "must be 1-64 letters, digits, '-' or '_'",
            )
        })?;
    let html = v
        .get("html")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty() && h.len() <= MAX_TEMPLATE)
        .ok_or_else(|| {
            invalid(
                slot,
                &at("html"),
                format!("must be 1-{MAX_TEMPLATE} bytes of HTML"),
            )
        })?;
    let when = match v.get("when") {
        Some(Value::Object(o)) => o,
        _ => return Err(invalid(slot, &at("when"), "must be an object")),
    };
    let mut lists: [Vec<String>; 3] = Default::default();
    for (key, list) in when {
        let i = match key.as_str() {
            "all" => 0,
            "any" => 1,
            "none" => 2,
            _ => {
                return Err(invalid(
                    slot,
                    &at(&format!("when.{key}")),
                    "is not all, any or none",
                ))
            }
        };
        let names = list
            .as_array()
            .ok_or_else(|| invalid(slot, &at(&format!("when.{key}")), "must be a list"))?;
        for (j, n) in names.iter().enumerate() {
            let field = at(&format!("when.{key}[{j}]"));
            let n = n
                .as_str()
                .ok_or_else(|| invalid(slot, &field, "must be a segment name"))?;
            if !declared(segments, n) {
                return Err(invalid(
                    slot,
                    &field,
                    format!("{n:?} is not a declared segment"),
                ));
            }
            lists[i].push(n.to_owned());
        }
    }
    let [all, any, none] = lists;
    if all.is_empty() && any.is_empty() {
        return Err(invalid(slot, &at("when"), "needs all or any"));
    }
    Ok(BannerVariant {
        name: name.to_owned(),
        all,
        any,
        none,
        html: html.to_owned(),
    })
}

/// Whether `name` is a segment the set can produce (`base:<key>` for `forEach` segments).
fn declared(segments: &SegmentSet, name: &str) -> bool {
    segments.segments.iter().any(|s| match s.for_each {
        Some(_) => name
            .strip_prefix(s.name.as_str())
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|key| !key.is_empty()),
        None => s.name == name,
    })
}

/// Renders a recommendations slot's markup for its items (each with the reason it was picked).
/// No items render nothing, so the page keeps the slot's own content (an empty catalogue shows
/// no heading over an empty list).
pub fn render_items(
    slot: &str,
    kind: &SlotKind,
    items: &[(&str, &str, Option<&CatalogItem>)],
) -> String {
    let SlotKind::Recommendations {
        title,
        template,
        item_template,
        ..
    } = kind
    else {
        return String::new();
    };
    if items.is_empty() {
        return String::new();
    }
    let rendered: String = items
        .iter()
        .map(|(product_id, reason, item)| {
            let lookup = |field: &str| item_field(field, product_id, reason, *item);
            item_template.render(&lookup, &[])
        })
        .collect();
    let lookup = |field: &str| match field {
        "title" => Some(title.clone()),
        "items" => Some(rendered.clone()),
        "slot" => Some(slot.to_owned()),
        _ => None,
    };
    template.render(&lookup, &["items"])
}

fn item_field(
    field: &str,
    product_id: &str,
    reason: &str,
    item: Option<&CatalogItem>,
) -> Option<String> {
    match field {
        "product_id" => Some(product_id.to_owned()),
        "reason" => Some(reason.to_owned()),
        "name" => Some(
            item.and_then(|i| i.name.clone())
                .unwrap_or_else(|| product_id.to_owned()),
        ),
        // The item's own link when it is a safe one, else the shop's product page.
        "url" => Some(
            item.and_then(|i| i.url.clone())
                .filter(|u| is_safe_url(u))
                .unwrap_or_else(|| {
                    format!(
                        "/product.html?id={}",
                        crate::format::encode::percent(product_id)
                    )
                }),
        ),
        "category" => item.and_then(|i| i.category.clone()),
        "brand" => item.and_then(|i| i.brand.clone()),
        "price" => item.and_then(|i| i.price).map(|p| format!("{p:.2}")),
        "currency" => item.and_then(|i| i.currency.clone()),
        "image_url" => item.and_then(|i| i.image_url.clone()),
        _ => None,
    }
}

/// Same-site paths and http(s) URLs. Browsers' URL parsing drops tabs and newlines and reads
/// `\` as `/`, so `/\evil.example` and `/<TAB>/evil.example` are `//evil.example`, another
/// origin: any whitespace, control character or backslash refuses the URL.
pub fn is_safe_url(url: &str) -> bool {
    if url
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return false;
    }
    (url.starts_with('/') && !url.starts_with("//"))
        || url.starts_with("https://")
        || url.starts_with("http://")
}

/// Escapes text for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The slot names a page carries (`data-seam-slot="..."`), in page order, without repeats.
pub fn slots_in_html(html: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for piece in html.split("data-seam-slot=").skip(1) {
        let Some(quote) = piece.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(name) = piece[1..].split(quote).next() else {
            continue;
        };
        if valid_slot_name(name) && !found.iter().any(|f| f == name) && found.len() < 10 {
            found.push(name.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_urls_browsers_read_as_another_origin() {
        let cases = [
            ("/product?id=1", true),
            ("https://shop.example/p/1", true),
            ("http://shop.example/p/1", true),
            ("//evil.example", false),
            ("/\\evil.example", false),
            ("\\\\evil.example", false),
            ("/\t/evil.example", false),
            ("/\n/evil.example", false),
            (" //evil.example", false),
            ("/\u{7f}/x", false),
            ("javascript:alert(1)", false),
            ("data:text/html,x", false),
            ("", false),
        ];
        for (url, safe) in cases {
            assert_eq!(is_safe_url(url), safe, "{url:?}");
        }
    }
    use serde_json::json;

    fn segments() -> SegmentSet {
        SegmentSet::from_json(
            &json!({"segments": [
                {"name": "cart_abandoners", "rule": {"exists": {"trait": "cart"}}},
                {"name": "high_discount_affinity", "rule": {"exists": {"trait": "d"}}},
                {"name": "interested_in", "forEach": {"trait": "cats"}, "rule": {"gte": [{"each": "value"}, 3]}}
            ]}),
            None,
        )
        .unwrap()
    }

    fn committed() -> SlotConfig {
        let doc: Value = serde_json::from_str(include_str!("../../../config/slots.json")).unwrap();
        let segments: Value =
            serde_json::from_str(include_str!("../../../config/segments.json")).unwrap();
        let computed: Value =
            serde_json::from_str(include_str!("../../../config/computed-traits.json")).unwrap();
        let computed = crate::personalise::computed::ComputedConfig::from_json(&computed).unwrap();
        let segments = SegmentSet::from_json(&segments, Some(&computed)).unwrap();
        SlotConfig::from_json(&doc, &segments).unwrap()
    }

    fn item(name: &str, url: &str) -> CatalogItem {
        CatalogItem::from_properties(
            json!({"product_id": "p1", "name": name, "url": url, "price": 9.5, "category": "Socks"})
                .as_object()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn renders_items_escaped_with_safe_links_only() {
        let config = committed();
        let kind = config.get(RECOMMENDED);
        let evil = item("<script>alert(1)</script>", "javascript:alert(1)");
        let html = render_items(RECOMMENDED, kind, &[("p1", "popular", Some(&evil))]);
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("href=\"/product.html?id=p1\""), "{html}");
        assert!(
            html.contains("<span class=\"seam-price\">9.50</span>"),
            "{html}"
        );
    }

    #[test]
    fn no_items_render_nothing_so_the_page_keeps_its_own_content() {
        let config = committed();
        assert_eq!(render_items(RECOMMENDED, config.get(RECOMMENDED), &[]), "");
    }

    #[test]
    fn sections_render_only_when_the_field_has_a_value() {
        let t =
            Template::parse("a{{#category}}[{{category}}]{{/category}}b", &ITEM_FIELDS).unwrap();
        let with = |f: &str| (f == "category").then(|| "X&Y".to_owned());
        assert_eq!(t.render(&with, &[]), "a[X&amp;Y]b");
        assert_eq!(t.render(&|_| None, &[]), "ab");
    }

    #[test]
    fn rejects_unknown_template_fields_naming_slot_and_field() {
        let doc =
            json!({"slots": {"recs": {"type": "recommendations", "itemTemplate": "{{nmae}}"}}});
        let e = SlotConfig::from_json(&doc, &segments()).unwrap_err();
        assert_eq!(e.code(), "invalid_slot_config");
        let message = e.to_string();
        assert!(
            message.starts_with("slot recs: itemTemplate uses {{nmae}}"),
            "{message}"
        );
    }

    #[test]
    fn rejects_unbalanced_sections() {
        for bad in [
            "{{#name}}x",
            "x{{/name}}",
            "{{#name}}{{/category}}",
            "{{name",
        ] {
            assert!(Template::parse(bad, &ITEM_FIELDS).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_banner_conditions_on_undeclared_segments() {
        let doc = json!({"slots": {"b": {"type": "banner", "variants": [
            {"name": "v", "when": {"all": ["cart_abandoner"]}, "html": "<p>x</p>"}]}}});
        let message = SlotConfig::from_json(&doc, &segments())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "slot b: variants[0].when.all[0] \"cart_abandoner\" is not a declared segment"
        );
        let ok = json!({"slots": {"b": {"type": "banner", "variants": [
            {"name": "v", "when": {"all": ["interested_in:Socks"]}, "html": "<p>x</p>"}]}}});
        assert!(SlotConfig::from_json(&ok, &segments()).is_ok());
    }

    #[test]
    fn rejects_unknown_fields_and_types() {
        let cases = [
            (
                json!({"slots": {"a": {"type": "carousel"}}}),
                "slot a: type",
            ),
            (
                json!({"slots": {"a": {"type": "banner", "variants": []}}}),
                "slot a: variants",
            ),
            (
                json!({"slots": {"a": {"type": "recommendations", "limit": 0}}}),
                "slot a: limit",
            ),
            (
                json!({"slots": {"a": {"type": "recommendations", "colour": 1}}}),
                "slot a: colour",
            ),
            (json!({"slot": {}}), "slot -: slot"),
            (
                json!({"slots": {"a b": {"type": "banner"}}}),
                "slot a b: name",
            ),
        ];
        for (doc, start) in cases {
            let message = SlotConfig::from_json(&doc, &segments())
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(start), "{message}");
        }
    }

    #[test]
    fn banner_shows_the_first_matching_variant() {
        let config = committed();
        let SlotKind::Banner { variants } = config.get("discount-banner") else {
            panic!("discount-banner is a banner");
        };
        let in_ = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let both = in_(&["cart_abandoners", "high_discount_affinity"]);
        assert_eq!(
            variants
                .iter()
                .find(|v| v.matches(&both))
                .map(|v| v.name.as_str()),
            Some("cart_discount_10")
        );
        assert!(!variants
            .iter()
            .any(|v| v.matches(&in_(&["cart_abandoners"]))));
        assert!(!variants.iter().any(|v| v.matches(&in_(&[]))));
    }

    #[test]
    fn undeclared_slots_fall_back_to_recommendations() {
        let config = committed();
        assert!(!config.declares("sidebar"));
        assert!(matches!(
            config.get("sidebar"),
            SlotKind::Recommendations { limit: 4, .. }
        ));
    }

    #[test]
    fn lists_only_recommendation_slots() {
        assert_eq!(committed().recommendation_slots(), ["recommended-for-you"]);
        assert!(SlotConfig::default().recommendation_slots().is_empty());
    }

    #[test]
    fn finds_slot_names_in_page_order() {
        let html = r#"<div data-seam-slot="discount-banner"></div><p data-seam-slot='recommended-for-you'></p>
            <div data-seam-slot="discount-banner"></div><div data-seam-slot="bad name"></div><div data-seam-slot=x>"#;
        assert_eq!(
            slots_in_html(html),
            ["discount-banner", "recommended-for-you"]
        );
    }
}
