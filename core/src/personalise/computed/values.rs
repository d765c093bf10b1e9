//! Trait values: the archive and the facts folded at a given `now` (passed in, so a value
//! is the same wherever and whenever it is computed for that instant).

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::archive::{archive_fits, empty_archive};
use super::config::{Aggregate, AggregateOp, ComputedConfig, TraitDef, TraitKind};
use super::property::{number, scalar_text, truthy, values_at};
use super::state::{Archive, Bucket, CartLine, ComputedState, Fact};
use super::{MAX_CART_QUANTITY, MAX_TALLY_VALUES, ORDER_COMPLETED, PRODUCT_ADDED, PRODUCT_REMOVED};
use crate::format::time::{format_iso8601, DAY_MS};

/// The computed traits of a state at `now_ms`, by name, in declaration order of the config.
/// A trait with nothing to report is `null` (averages and shares without events, `last_at`
/// without a matching event); counts and sums start at 0, lists at `[]`.
pub fn values(state: &ComputedState, config: &ComputedConfig, now_ms: i64) -> Map<String, Value> {
    values_of(state, config, now_ms, |_| true)
}

/// [`values`] of only the traits `wanted` names: each trait folds the facts on its own, and a
/// caller that reads a few (segment probes) need not pay for the rest.
pub fn values_of(
    state: &ComputedState,
    config: &ComputedConfig,
    now_ms: i64,
    wanted: impl Fn(&str) -> bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for def in config.traits.iter().filter(|d| wanted(&d.name)) {
        let archive = state
            .archive
            .get(&def.name)
            .filter(|a| archive_fits(a, &def.kind));
        let facts = state.facts.iter().filter(|f| def.reads(&f.event));
        out.insert(def.name.clone(), value_of(def, archive, facts, now_ms));
    }
    out
}

fn value_of<'a>(
    def: &TraitDef,
    archive: Option<&'a Archive>,
    facts: impl Iterator<Item = &'a Fact>,
    now_ms: i64,
) -> Value {
    let empty = empty_archive(&def.kind);
    match (archive.unwrap_or(&empty), &def.kind) {
        (Archive::Agg { days }, TraitKind::Aggregate(agg)) => {
            let since = agg.window_ms.map(|w| now_ms - w);
            let first_day = since.map_or(i64::MIN, |s| s.div_euclid(DAY_MS));
            let mut total = Bucket::default();
            for bucket in days.range(first_day..).map(|(_, b)| b) {
                total.add(bucket);
            }
            for fact in facts.filter(|f| since.is_none_or(|s| f.ts >= s)) {
                contribute(&mut total, agg, fact);
            }
            aggregate_value(agg.op, &total)
        }
        (Archive::Last { t, v }, TraitKind::Last { property, .. }) => {
            let mut latest: (i64, &Value) = (*t, v);
            for fact in facts {
                if let Some(value) = fact.props.get(property).filter(|x| !x.is_null()) {
                    if fact.ts >= latest.0 {
                        latest = (fact.ts, value);
                    }
                }
            }
            latest.1.clone()
        }
        (
            Archive::Recent { items },
            TraitKind::Recent {
                property, limit, ..
            },
        ) => {
            let mut all: Vec<(i64, &Value)> = items.iter().map(|(t, v)| (*t, v)).collect();
            for fact in facts {
                all.extend(values_at(&fact.props, property).map(|v| (fact.ts, v)));
            }
            Value::Array(
                newest_distinct(all, *limit)
                    .into_iter()
                    .map(|(_, v)| v.clone())
                    .collect(),
            )
        }
        (Archive::Cart { lines }, TraitKind::Cart { limit }) => {
            let mut lines = lines.clone();
            for fact in facts {
                cart_step(&mut lines, fact, *limit);
            }
            cart_value(lines)
        }
        (Archive::At { t }, TraitKind::LastAt { as_days, .. }) => {
            let latest = facts.map(|f| f.ts).fold(*t, i64::max);
            match (latest, as_days) {
                (i64::MIN, _) => Value::Null,
                (t, true) => Value::from((now_ms - t).max(0).div_euclid(DAY_MS)),
                (t, false) => Value::from(format_iso8601(t)),
            }
        }
        (Archive::Sessions { closed, last }, TraitKind::Sessions { gap_ms }) => {
            let mut count = closed + u64::from(*last != i64::MIN);
            let mut prev = *last;
            for fact in facts {
                if prev == i64::MIN || fact.ts - prev > *gap_ms {
                    count += 1;
                }
                prev = prev.max(fact.ts);
            }
            Value::from(count)
        }
        _ => Value::Null,
    }
}

pub(super) fn contribute(bucket: &mut Bucket, agg: &Aggregate, fact: &Fact) {
    if agg.subtract.contains(&fact.event) {
        // A refund or cancellation takes its amount back; it is not one more event.
        if let Some(x) = agg
            .properties
            .iter()
            .find_map(|p| fact.props.get(p).and_then(number))
        {
            bucket.sum -= x;
        }
        return;
    }
    bucket.n += 1;
    match agg.op {
        AggregateOp::Sum | AggregateOp::Average => {
            if let Some(x) = agg
                .properties
                .iter()
                .find_map(|p| fact.props.get(p).and_then(number))
            {
                bucket.sum += x;
                bucket.summed += 1;
            }
        }
        AggregateOp::Share => {
            if agg
                .when
                .iter()
                .any(|p| fact.props.get(p).is_some_and(truthy))
            {
                bucket.hits += 1;
            }
        }
        AggregateOp::Tally { .. } => {
            for path in &agg.properties {
                for v in values_at(&fact.props, path).filter_map(scalar_text) {
                    *bucket.tally.entry(v).or_default() += 1;
                }
            }
            cap_tally(&mut bucket.tally, MAX_TALLY_VALUES);
        }
        AggregateOp::Count => {}
    }
}

fn aggregate_value(op: AggregateOp, total: &Bucket) -> Value {
    match op {
        AggregateOp::Count => Value::from(total.n),
        AggregateOp::Sum => rounded(total.sum, 2),
        AggregateOp::Average if total.summed > 0 => rounded(total.sum / total.summed as f64, 2),
        AggregateOp::Share if total.n > 0 => rounded(total.hits as f64 / total.n as f64, 4),
        AggregateOp::Average | AggregateOp::Share => Value::Null,
        AggregateOp::Tally { limit } => {
            let mut tally = total.tally.clone();
            cap_tally(&mut tally, limit);
            Value::Object(
                tally
                    .into_iter()
                    .map(|(k, v)| (k, Value::from(v)))
                    .collect(),
            )
        }
    }
}

/// Keeps the `limit` largest counts (ties: the smaller value wins).
pub(super) fn cap_tally(tally: &mut BTreeMap<String, u64>, limit: usize) {
    if tally.len() <= limit {
        return;
    }
    let mut ranked: Vec<(String, u64)> = std::mem::take(tally).into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    tally.extend(ranked);
}

/// Rounds to `places` decimals so float summation order never shows in a value.
fn rounded(x: f64, places: i32) -> Value {
    let f = 10f64.powi(places);
    Number::from_f64((x * f).round() / f).map_or(Value::Null, Value::Number)
}

pub(super) fn cart_step(lines: &mut BTreeMap<String, CartLine>, fact: &Fact, limit: usize) {
    let product = || {
        fact.props
            .get("product_id")
            .and_then(scalar_text)
            .or_else(|| fact.props.get("sku").and_then(scalar_text))
    };
    let quantity = fact
        .props
        .get("quantity")
        .and_then(number)
        .map(|q| (q.round() as i64).clamp(0, MAX_CART_QUANTITY));
    match fact.event.as_str() {
        PRODUCT_ADDED => {
            let Some(id) = product() else { return };
            let line = lines.entry(id).or_insert_with(|| CartLine {
                quantity: 0,
                ts: fact.ts,
                props: Map::new(),
            });
            line.quantity = (line.quantity + quantity.unwrap_or(1)).min(MAX_CART_QUANTITY);
            for key in ["price", "name", "category", "url", "image_url"] {
                if let Some(v) = fact.props.get(key) {
                    line.props.insert(key.to_owned(), v.clone());
                }
            }
            if line.quantity <= 0 {
                lines.retain(|_, l| l.quantity > 0);
            }
            while lines.len() > limit {
                // Drop the line added longest ago.
                let oldest = lines
                    .iter()
                    .min_by(|a, b| (a.1.ts, a.0).cmp(&(b.1.ts, b.0)))
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    lines.remove(&k);
                }
            }
        }
        PRODUCT_REMOVED => {
            let Some(id) = product() else { return };
            let remove = match (lines.get_mut(&id), quantity) {
                (Some(line), Some(q)) => {
                    line.quantity -= q;
                    line.quantity <= 0
                }
                (Some(_), None) => true,
                (None, _) => false,
            };
            if remove {
                lines.remove(&id);
            }
        }
        ORDER_COMPLETED => lines.clear(),
        _ => {}
    }
}

fn cart_value(lines: BTreeMap<String, CartLine>) -> Value {
    let mut ordered: Vec<(String, CartLine)> = lines.into_iter().collect();
    ordered.sort_by(|a, b| (a.1.ts, &a.0).cmp(&(b.1.ts, &b.0)));
    Value::Array(
        ordered
            .into_iter()
            .map(|(id, line)| {
                let mut item = line.props;
                item.insert("product_id".into(), Value::from(id));
                item.insert("quantity".into(), Value::from(line.quantity));
                Value::Object(item)
            })
            .collect(),
    )
}

/// Distinct values, each at its newest time, newest first (ties by value), at most `limit`.
fn newest_distinct(mut items: Vec<(i64, &Value)>, limit: usize) -> Vec<(i64, &Value)> {
    // Values are only rendered to text to break ties between equal times.
    items.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.to_string().cmp(&b.1.to_string()))
    });
    let mut out: Vec<(i64, &Value)> = Vec::with_capacity(limit.min(items.len()));
    for (t, v) in items {
        if out.len() >= limit {
            break;
        }
        if !out.iter().any(|(_, seen)| *seen == v) {
            out.push((t, v));
        }
    }
    out
}

/// [`newest_distinct`] of owned items.
pub(super) fn newest_distinct_owned(items: &[(i64, Value)], limit: usize) -> Vec<(i64, Value)> {
    newest_distinct(items.iter().map(|(t, v)| (*t, v)).collect(), limit)
        .into_iter()
        .map(|(t, v)| (t, v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::event::Event;
    use crate::personalise::computed::test_support::{
        order, page, shipped_config, state_of, track, HOUR, T0,
    };
    use serde_json::json;

    #[test]
    fn refunds_and_cancellations_take_their_amount_out_of_lifetime_value_once() {
        let config = shipped_config();
        let mut events = vec![
            order("m1", "o1", 0, json!({"revenue": 100})),
            order("m2", "o2", 1000, json!({"revenue": 50})),
            order("m3", "o3", 1500, json!({"total": 20})),
            track(
                "m4",
                "Order Refunded",
                2000,
                json!({"order_id": "o1", "total": 100}),
            ),
            // The refund reported twice (a webhook retried with a new messageId): once.
            track(
                "m5",
                "Order Refunded",
                2500,
                json!({"order_id": "o1", "total": 100}),
            ),
        ];
        let v = values(&state_of(&events, &config), &config, T0 + HOUR);
        assert_eq!(v["lifetime_value"], json!(70.0));
        assert_eq!(v["orders_count"], json!(3), "orders placed stay counted");
        assert_eq!(
            v["average_order_value"],
            json!(56.67),
            "the average is of orders placed"
        );
        events.push(track(
            "m6",
            "Order Cancelled",
            3000,
            json!({"order_id": "o2", "revenue": 50}),
        ));
        // No amount: nothing to take back.
        events.push(track(
            "m7",
            "Order Refunded",
            3500,
            json!({"order_id": "o3"}),
        ));
        let v = values(&state_of(&events, &config), &config, T0 + HOUR);
        assert_eq!(v["lifetime_value"], json!(20.0));
    }

    #[test]
    fn average_and_share_are_null_without_orders_and_counts_start_at_zero() {
        let config = shipped_config();
        let v = values(&ComputedState::default(), &config, T0);
        assert_eq!(v["orders_count"], json!(0));
        assert_eq!(v["lifetime_value"], json!(0.0));
        assert_eq!(v["average_order_value"], Value::Null);
        assert_eq!(v["discount_affinity"], Value::Null);
        assert_eq!(v["days_since_last_order"], Value::Null);
        assert_eq!(v["cart"], json!([]));
        assert_eq!(v["sessions_count"], json!(0));
    }

    #[test]
    fn discount_affinity_is_the_share_of_orders_with_a_coupon_or_discount() {
        let config = shipped_config();
        let events = [
            order("m1", "o1", 0, json!({"coupon": "SAVE10"})),
            order("m2", "o2", 1, json!({"discount": 5})),
            order("m3", "o3", 2, json!({"discount": 0, "coupon": ""})),
            order("m4", "o4", 3, json!({})),
        ];
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(v["discount_affinity"], json!(0.5));
    }

    #[test]
    fn windowed_counts_ignore_events_outside_the_window() {
        let config = shipped_config();
        let events = [
            order("m1", "o1", 0, json!({})),
            order("m2", "o2", 40 * 24 * HOUR, json!({})),
        ];
        let state = state_of(&events, &config);
        let v = values(&state, &config, T0 + 45 * 24 * HOUR);
        assert_eq!(v["orders_count"], json!(2));
        assert_eq!(v["orders_last_30_days"], json!(1));
        assert_eq!(v["days_since_last_order"], json!(5));
        assert_eq!(
            v["last_order_at"],
            json!(format_iso8601(T0 + 40 * 24 * HOUR))
        );
    }

    #[test]
    fn cart_follows_added_and_removed_and_empties_on_order() {
        let config = shipped_config();
        let mut events = vec![
            track(
                "a1",
                "Product Added",
                0,
                json!({"product_id": "p1", "price": 10, "name": "Trail Runner"}),
            ),
            track(
                "a2",
                "Product Added",
                1,
                json!({"product_id": "p1", "quantity": 2}),
            ),
            track(
                "a3",
                "Product Added",
                2,
                json!({"sku": "S-2", "quantity": "1"}),
            ),
            track(
                "r1",
                "Product Removed",
                3,
                json!({"product_id": "p1", "quantity": 1}),
            ),
        ];
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(
            v["cart"],
            json!([
                {"product_id": "p1", "quantity": 2, "price": 10, "name": "Trail Runner"},
                {"product_id": "S-2", "quantity": 1}
            ])
        );
        events.push(track("r2", "Product Removed", 4, json!({"sku": "S-2"})));
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(v["cart"][0]["product_id"], json!("p1"));
        assert_eq!(v["cart"].as_array().unwrap().len(), 1);
        events.push(order("o", "o1", 5, json!({})));
        let v = values(&state_of(&events, &config), &config, T0);
        assert_eq!(v["cart"], json!([]));
    }

    #[test]
    fn cart_uses_event_time_not_arrival_order() {
        let config = shipped_config();
        let add = track("a1", "Product Added", 10, json!({"product_id": "p1"}));
        let done = order("o", "o1", 20, json!({}));
        let late_add = track("a2", "Product Added", 30, json!({"product_id": "p2"}));
        let forward = state_of(&[add.clone(), done.clone(), late_add.clone()], &config);
        let backward = state_of(&[late_add, done, add], &config);
        assert_eq!(forward, backward);
        assert_eq!(
            values(&forward, &config, T0)["cart"][0]["product_id"],
            json!("p2")
        );
    }

    #[test]
    fn viewed_products_are_distinct_newest_first_and_bounded() {
        let config = shipped_config();
        let mut events: Vec<Event> = (0..25)
            .map(|i| {
                track(&format!("v{i}"), "Product Viewed", i * 1000,
                    json!({"product_id": format!("p{i}"), "category": if i % 2 == 0 { "Shoes" } else { "Socks" }}))
            })
            .collect();
        events.push(track(
            "again",
            "Product Viewed",
            99_000,
            json!({"product_id": "p3", "category": "Shoes"}),
        ));
        let v = values(&state_of(&events, &config), &config, T0 + 100_000);
        let viewed = v["viewed_products"].as_array().unwrap();
        assert_eq!(viewed.len(), 20);
        assert_eq!(viewed[0], json!("p3"));
        assert_eq!(viewed[1], json!("p24"));
        assert_eq!(v["last_viewed_category"], json!("Shoes"));
        assert_eq!(v["category_views"], json!({"Shoes": 14, "Socks": 12}));
    }

    #[test]
    fn sessions_split_on_gaps_longer_than_configured() {
        let config = shipped_config();
        let events = [
            page("p1", 0),
            page("p2", 29 * 60_000),
            page("p3", 70 * 60_000),
            page("p4", 5 * HOUR),
        ];
        let v = values(&state_of(&events, &config), &config, T0 + 6 * HOUR);
        assert_eq!(v["sessions_count"], json!(3));
        assert_eq!(v["last_seen_at"], json!(format_iso8601(T0 + 5 * HOUR)));
    }
}
