//! What facts leave behind when they fall out of the horizon: each trait folds them into an
//! [`Archive`] shaped for what it computes (day buckets, a latest value, a cart), so values stay
//! exact without an unbounded log and archives of merged profiles add up.

use std::collections::BTreeMap;

use serde_json::Value;

use super::config::{TraitDef, TraitKind};
use super::property::values_at;
use super::state::{Archive, Bucket, Fact};
use super::values::{cart_step, contribute, newest_distinct_owned};
use super::MAX_LIST_LIMIT;
use crate::format::time::DAY_MS;

pub(super) fn empty_archive(kind: &TraitKind) -> Archive {
    match kind {
        TraitKind::Aggregate(_) => Archive::Agg {
            days: BTreeMap::new(),
        },
        TraitKind::Last { .. } => Archive::Last {
            t: i64::MIN,
            v: Value::Null,
        },
        TraitKind::Recent { .. } => Archive::Recent { items: Vec::new() },
        TraitKind::Cart { .. } => Archive::Cart {
            lines: BTreeMap::new(),
        },
        TraitKind::LastAt { .. } => Archive::At { t: i64::MIN },
        TraitKind::Sessions { .. } => Archive::Sessions {
            closed: 0,
            last: i64::MIN,
        },
    }
}

pub(super) fn archive_is_empty(archive: &Archive) -> bool {
    match archive {
        Archive::Agg { days } => days.is_empty(),
        Archive::Last { v, .. } => v.is_null(),
        Archive::Recent { items } => items.is_empty(),
        // An emptied cart still matters: it hides lines of even older facts (none remain).
        Archive::Cart { lines } => lines.is_empty(),
        Archive::At { t } | Archive::Sessions { last: t, .. } => *t == i64::MIN,
    }
}

/// Whether a stored archive still matches the trait's declaration (a changed type starts over).
pub(super) fn archive_fits(archive: &Archive, kind: &TraitKind) -> bool {
    matches!(
        (archive, kind),
        (Archive::Agg { .. }, TraitKind::Aggregate(_))
            | (Archive::Last { .. }, TraitKind::Last { .. })
            | (Archive::Recent { .. }, TraitKind::Recent { .. })
            | (Archive::Cart { .. }, TraitKind::Cart { .. })
            | (Archive::At { .. }, TraitKind::LastAt { .. })
            | (Archive::Sessions { .. }, TraitKind::Sessions { .. })
    )
}

pub(super) fn absorb(archive: &mut Archive, def: &TraitDef, fact: &Fact) {
    match (archive, &def.kind) {
        (Archive::Agg { days }, TraitKind::Aggregate(agg)) => {
            let day = agg.window_ms.map_or(0, |_| fact.ts.div_euclid(DAY_MS));
            let mut one = Bucket::default();
            contribute(&mut one, agg, fact);
            days.entry(day).or_default().add(&one);
        }
        (Archive::Last { t, v }, TraitKind::Last { property, .. }) => {
            if let Some(value) = fact.props.get(property).filter(|x| !x.is_null()) {
                if (fact.ts, value.to_string()) >= (*t, v.to_string()) {
                    *t = fact.ts;
                    *v = value.clone();
                }
            }
        }
        (
            Archive::Recent { items },
            TraitKind::Recent {
                property, limit, ..
            },
        ) => {
            items.extend(values_at(&fact.props, property).map(|v| (fact.ts, v.clone())));
            *items = newest_distinct_owned(items, *limit);
        }
        (Archive::Cart { lines }, TraitKind::Cart { limit }) => cart_step(lines, fact, *limit),
        (Archive::At { t }, TraitKind::LastAt { .. }) => *t = (*t).max(fact.ts),
        (Archive::Sessions { closed, last }, TraitKind::Sessions { gap_ms }) => {
            if *last != i64::MIN && fact.ts - *last > *gap_ms {
                *closed += 1;
            }
            *last = (*last).max(fact.ts);
        }
        _ => {}
    }
}

/// Drops day buckets no window can reach any more (relative to the oldest held fact, which is
/// never after `now`).
pub(super) fn prune(archive: &mut Archive, def: &TraitDef, oldest_fact_ms: i64) {
    if let (Archive::Agg { days }, TraitKind::Aggregate(agg)) = (archive, &def.kind) {
        if let Some(window) = agg.window_ms {
            let first_day = (oldest_fact_ms - window).div_euclid(DAY_MS) - 1;
            days.retain(|day, _| *day >= first_day);
        }
    }
}

pub(super) fn combine(x: Archive, y: Archive, def: &TraitDef) -> Archive {
    match (x, y) {
        (Archive::Agg { mut days }, Archive::Agg { days: other }) => {
            for (day, bucket) in other {
                days.entry(day).or_default().add(&bucket);
            }
            Archive::Agg { days }
        }
        (Archive::Last { t, v }, Archive::Last { t: t2, v: v2 }) => {
            if (t2, v2.to_string()) > (t, v.to_string()) {
                Archive::Last { t: t2, v: v2 }
            } else {
                Archive::Last { t, v }
            }
        }
        (Archive::Recent { mut items }, Archive::Recent { items: other }) => {
            let limit = match def.kind {
                TraitKind::Recent { limit, .. } => limit,
                _ => MAX_LIST_LIMIT,
            };
            items.extend(other);
            Archive::Recent {
                items: newest_distinct_owned(&items, limit),
            }
        }
        (Archive::Cart { mut lines }, Archive::Cart { lines: other }) => {
            for (id, line) in other {
                let keep = lines
                    .get(&id)
                    .is_none_or(|cur| (line.ts, line.quantity) > (cur.ts, cur.quantity));
                if keep {
                    lines.insert(id, line);
                }
            }
            Archive::Cart { lines }
        }
        (Archive::At { t }, Archive::At { t: t2 }) => Archive::At { t: t.max(t2) },
        (
            Archive::Sessions { closed, last },
            Archive::Sessions {
                closed: c2,
                last: l2,
            },
        ) => Archive::Sessions {
            // Each side's open session ends somewhere: count one of them as closed.
            closed: closed + c2 + 1,
            last: last.max(l2),
        },
        (x, _) => x,
    }
}

#[cfg(test)]
mod tests {
    use crate::collect::event::Event;
    use crate::personalise::computed::test_support::{
        history, order, shipped_config, state_of, track, IntoPair, HOUR, T0,
    };
    use crate::personalise::computed::{merge, values, ComputedConfig};
    use serde_json::json;

    #[test]
    fn subtracted_amounts_survive_folding_into_the_archive_and_merges() {
        let doc = json!({"horizon": 2, "traits": [{"name": "net", "type": "sum",
            "event": "Order Completed", "property": "total", "subtract": "Order Refunded"}]});
        let config = ComputedConfig::from_json(&doc).unwrap();
        let events = [
            order("m1", "o1", 0, json!({"total": 40})),
            track(
                "m2",
                "Order Refunded",
                1000,
                json!({"order_id": "o1", "total": 15}),
            ),
            order("m3", "o2", 2000, json!({"total": 10})),
            order("m4", "o3", 3000, json!({"total": 5})),
        ];
        let one = state_of(&events, &config);
        assert!(
            !one.archive.is_empty(),
            "the horizon of 2 folded the first facts"
        );
        assert_eq!(values(&one, &config, T0)["net"], json!(40.0));
        let (a, b) = (
            state_of(&events[..2], &config),
            state_of(&events[2..], &config),
        );
        assert_eq!(
            values(&merge(&a, &b, &config), &config, T0)["net"],
            json!(40.0)
        );
    }

    #[test]
    fn archive_keeps_values_exact_when_the_horizon_overflows() {
        let big = shipped_config();
        let small = ComputedConfig::new(4, big.dedup_by.clone(), big.traits.clone());
        let events = history(60);
        let full = state_of(&events, &big);
        let folded = state_of(&events, &small);
        assert_eq!(folded.facts.len(), 4);
        assert!(!folded.archive.is_empty());
        let now = T0 + 40 * 24 * HOUR;
        assert_eq!(values(&folded, &small, now), values(&full, &big, now));
    }

    #[test]
    fn merge_of_folded_states_adds_up_archived_aggregates() {
        let base = shipped_config();
        let config = ComputedConfig::new(5, base.dedup_by.clone(), base.traits.clone());
        let events = history(60);
        let (left, right): (Vec<Event>, Vec<Event>) = events
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| *i < 30)
            .into_iter_pair();
        let merged = merge(
            &state_of(&left, &config),
            &state_of(&right, &config),
            &config,
        );
        let now = T0 + 40 * 24 * HOUR;
        let want = values(&state_of(&events, &base), &base, now);
        let got = values(&merged, &config, now);
        for name in [
            "orders_count",
            "lifetime_value",
            "discount_affinity",
            "last_seen_at",
            "purchased_products",
            "viewed_products",
            "category_views",
        ] {
            assert_eq!(got[name], want[name], "{name}");
        }
        assert_eq!(merged.facts.len(), 5);
    }
}
