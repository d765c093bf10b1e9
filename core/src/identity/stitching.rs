//! Incremental stitching's input and output: the stored links of the components a new link
//! touches ([`component_links`]; the edge gets them from D1 with one recursive query instead),
//! and the [`StitchPlan`] that says what storing the link changes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::graph::{Conflict, Link, ProfileId};
use super::identifier::Identifier;
use super::rules::Rules;

/// The stored links in the link-graph components that `seeds` touch: every link sharing an
/// identifier with a seed, then every link sharing one with those, until nothing new appears.
/// Blocked identifiers connect nothing. Returned in store order.
pub fn component_links(store: &[Link], seeds: &[Identifier], rules: &Rules) -> Vec<Link> {
    let canonical: Vec<Vec<Identifier>> = store
        .iter()
        .map(|l| rules.canonical_ids(&l.identifiers))
        .collect();
    let mut links_of: BTreeMap<&Identifier, Vec<usize>> = BTreeMap::new();
    for (i, ids) in canonical.iter().enumerate() {
        for id in ids {
            links_of.entry(id).or_default().push(i);
        }
    }
    let mut seen: BTreeSet<&Identifier> = BTreeSet::new();
    let mut queue: VecDeque<&Identifier> = VecDeque::new();
    for seed in seeds {
        if !rules.is_blocked(&seed.value) && seen.insert(seed) {
            queue.push_back(seed);
        }
    }
    let mut taken = vec![false; store.len()];
    while let Some(id) = queue.pop_front() {
        for &i in links_of.get(id).into_iter().flatten() {
            match taken.get_mut(i) {
                Some(t) if !*t => *t = true,
                _ => continue,
            }
            for other in canonical.get(i).into_iter().flatten() {
                if seen.insert(other) {
                    queue.push_back(other);
                }
            }
        }
    }
    store
        .iter()
        .zip(taken)
        .filter(|(_, taken)| *taken)
        .map(|(link, _)| link.clone())
        .collect()
}

/// A profile absorbed by another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Merge {
    /// The profile that no longer exists.
    pub from: ProfileId,
    /// The profile now holding its best identifier.
    pub into: ProfileId,
    /// `messageId` of the link whose arrival caused it.
    pub cause_message_id: String,
}

/// What storing one more link changes, for the caller to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StitchPlan {
    /// The profile of the new link's best identifier (the event's profile); `None` when the link
    /// carries no identifiers.
    pub profile_id: Option<ProfileId>,
    /// Every identifier of the touched components with its profile, sorted by identifier.
    pub assignments: Vec<(Identifier, ProfileId)>,
    /// Profiles that existed before (in `partition(fragment)`) and no longer exist, each with the
    /// profile now holding its best identifier. A profile renamed because a higher-priority
    /// identifier joined it (anonymous visitor signs in) is reported here too. Sorted by `from`.
    pub merges: Vec<Merge>,
    /// Conflicts of the new partition that the old one did not have (compared by time, message
    /// ID, refused identifier and reason).
    pub conflicts: Vec<Conflict>,
    /// False when `fragment` already held this link (the plan then changes nothing).
    pub is_new_link: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::{anon, email, link, uid};

    #[test]
    fn component_links_follow_refused_links_too() {
        let rules = Rules::default();
        let store = vec![
            link(1, "m1", &[uid("u1"), anon("a")]),
            link(2, "m2", &[uid("u2"), anon("a")]),
            link(3, "m3", &[uid("u2"), email("x@y.example")]),
            link(4, "m4", &[uid("u9")]),
        ];
        let got = component_links(&store, &[email("x@y.example")], &rules);
        assert_eq!(got.len(), 3);
        assert!(component_links(&store, &[uid("nobody")], &rules).is_empty());
    }
}
