//! The partition engine behind [`partition`] and [`stitch`]: links canonicalised once with their
//! identifiers interned to integer nodes ([`Prepared`]), then union-find over the processing
//! sequence with the rules checked at every union ([`Graph`]). See the parent module's docs for
//! what is computed and why it does not depend on arrival order.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::rules::Blocker;
use super::{
    Conflict, ConflictReason, IdType, Identifier, Link, Merge, Partition, Profile, ProfileId,
    Rules, StitchPlan,
};

/// Marks an identifier that is not (yet) a node of the graph.
const NO_NODE: usize = usize::MAX;

/// One link in the processing sequence, its identifiers interned (see [`Prepared`]).
#[derive(Debug)]
struct Step<'a> {
    timestamp_ms: i64,
    message_id: &'a str,
    /// Its nodes, best first, as the range `start..end` of [`Prepared::members`].
    start: usize,
    end: usize,
    /// The link [`stitch`] adds. It sorts after an identical stored link, so deduplication keeps
    /// the stored one and an added link that survives is new.
    added: bool,
}

/// Links canonicalised once, with identifiers interned to integer nodes.
///
/// A node is the index of a distinct non-blocked identifier in the canonical order (priority rank,
/// then text form), so sorting nodes sorts identifiers best first and a cluster's best identifier
/// is its smallest node. `order` maps nodes to `Identifier`'s own order, which orders links and
/// assignments.
#[derive(Debug)]
struct Prepared<'a> {
    /// The identifier of each node.
    ids: Vec<&'a Identifier>,
    /// Each node's position in `Identifier` order.
    order: Vec<usize>,
    /// Nodes in `Identifier` order (the inverse of `order`).
    by_order: Vec<usize>,
    /// Types that have a limit with that limit, ordered by `(rank, type)`: when a union breaks
    /// several limits the first one is reported.
    limited: Vec<(&'a IdType, usize)>,
    /// Each node's index into `limited`, or [`NO_NODE`] when its type is unlimited.
    limited_type: Vec<usize>,
    /// Every step's nodes, concatenated.
    members: Vec<usize>,
    /// For each entry of `members`: whether its link only claims it.
    claimed: Vec<bool>,
    /// The processing sequence: canonical links sorted by `(timestamp_ms, message_id,
    /// identifiers)`, without repeats.
    steps: Vec<Step<'a>>,
    /// The best node of the added link, when it has one.
    added_best: Option<usize>,
}

impl<'a> Prepared<'a> {
    /// Canonicalises `links` (and `added`: blocked identifiers dropped, the rest best first
    /// without repeats), sorts and deduplicates them, deciding every per-identifier fact
    /// (blocked, rank, text, limit) once per distinct identifier rather than once per occurrence.
    fn new(links: &'a [Link], added: Option<&'a Link>, rules: &Rules) -> Self {
        let mut spans: Vec<(&'a Link, usize, usize, bool)> = Vec::with_capacity(links.len() + 1);
        let total = links.iter().chain(added).map(|l| l.identifiers.len()).sum();
        let mut occurrences: Vec<(u64, &'a Identifier, usize)> = Vec::with_capacity(total);
        let all = links
            .iter()
            .map(|l| (l, false))
            .chain(added.map(|l| (l, true)));
        for (link, is_added) in all {
            let start = occurrences.len();
            for id in &link.identifiers {
                occurrences.push((fingerprint(&id.value), id, occurrences.len()));
            }
            spans.push((link, start, occurrences.len(), is_added));
        }
        let (distinct, mut members) = intern(occurrences);
        let blocked = Blocker::new(rules);

        // Canonical order of the non-blocked ones. Ranks are distinct per class, so within a
        // rank all identifiers share a class and their text forms share the `<class>:` prefix:
        // comparing values compares text forms. External types differ after the prefix, so they
        // compare by full text form.
        let mut keyed: Vec<(usize, Cow<'a, str>, usize)> = distinct
            .iter()
            .enumerate()
            .filter(|(_, id)| !blocked.blocks(&id.value))
            .map(|(number, id)| {
                let text = match id.kind {
                    IdType::External(_) => Cow::Owned(id.to_string()),
                    _ => Cow::Borrowed(id.value.as_str()),
                };
                (rules.rank(id.class()), text, number)
            })
            .collect();
        keyed.sort_unstable();
        let mut node_of = vec![NO_NODE; distinct.len()];
        let mut ids = Vec::with_capacity(keyed.len());
        for (node, (_, _, number)) in keyed.iter().enumerate() {
            if let (Some(slot), Some(id)) = (node_of.get_mut(*number), distinct.get(*number)) {
                *slot = node;
                ids.push(*id);
            }
        }

        // `Identifier` order is by type, then value; within one type, text forms share their
        // prefix up to the value, so nodes are already in value order: a stable sort by type
        // finishes the job without comparing values again.
        let mut by_order: Vec<usize> = (0..ids.len()).collect();
        by_order.sort_by_key(|&node| ids.get(node).map(|id| &id.kind));
        let mut order = vec![0; ids.len()];
        for (position, &node) in by_order.iter().enumerate() {
            if let Some(slot) = order.get_mut(node) {
                *slot = position;
            }
        }

        let limit_of: Vec<Option<usize>> = ids.iter().map(|id| rules.limit(&id.kind)).collect();
        let mut limited: Vec<(&'a IdType, usize)> = ids
            .iter()
            .zip(&limit_of)
            .filter_map(|(id, limit)| Some((&id.kind, (*limit)?)))
            .collect();
        limited.sort_unstable_by(|a, b| {
            (rules.rank(a.0.class()), a.0).cmp(&(rules.rank(b.0.class()), b.0))
        });
        limited.dedup_by(|a, b| a.0 == b.0);
        let limited_type = ids
            .iter()
            .zip(&limit_of)
            .map(|(id, limit)| match limit {
                Some(_) => limited
                    .binary_search_by(|(kind, _)| {
                        (rules.rank(kind.class()), *kind).cmp(&(rules.rank(id.class()), &id.kind))
                    })
                    .unwrap_or(NO_NODE),
                None => NO_NODE,
            })
            .collect();

        // Each link's nodes, best first, without repeats, compacted in place: a link's nodes
        // are written at or before where its occurrences were read.
        let mut steps = Vec::with_capacity(spans.len());
        let mut claimed = vec![false; members.len()];
        let mut added_best = None;
        let mut end = 0;
        for (link, from, to, is_added) in spans {
            let start = end;
            for read in from..to {
                let node = members
                    .get(read)
                    .and_then(|&number| node_of.get(number))
                    .copied()
                    .unwrap_or(NO_NODE);
                if let (false, Some(slot)) = (node == NO_NODE, members.get_mut(end)) {
                    *slot = node;
                    end += 1;
                }
            }
            if let Some(own) = members.get_mut(start..end) {
                own.sort_unstable();
                end = start + dedup_sorted(own);
            }
            if !link.claimed.is_empty() {
                for at in start..end {
                    let id = members.get(at).and_then(|&node| ids.get(node));
                    if let (Some(id), Some(flag)) = (id, claimed.get_mut(at)) {
                        *flag = link.claimed.contains(id);
                    }
                }
            }
            if is_added {
                added_best = members.get(start).copied().filter(|_| end > start);
            }
            steps.push(Step {
                timestamp_ms: link.timestamp_ms,
                message_id: &link.message_id,
                start,
                end,
                added: is_added,
            });
        }
        members.truncate(end);
        claimed.truncate(end);

        let mut prepared = Self {
            ids,
            order,
            by_order,
            limited,
            limited_type,
            members,
            claimed,
            steps: Vec::new(),
            added_best,
        };
        steps.sort_by(|a, b| prepared.cmp_steps(a, b).then(a.added.cmp(&b.added)));
        steps.dedup_by(|later, earlier| prepared.cmp_steps(later, earlier).is_eq());
        prepared.steps = steps;
        prepared
    }

    fn nodes(&self, step: &Step) -> &[usize] {
        self.members.get(step.start..step.end).unwrap_or_default()
    }

    /// Which of [`Prepared::nodes`] the step only claims.
    fn claims(&self, step: &Step) -> &[bool] {
        self.claimed.get(step.start..step.end).unwrap_or_default()
    }

    /// `Link`'s order: time, message ID, then the identifiers (best first) compared in
    /// `Identifier` order, then which are claimed.
    fn cmp_steps(&self, a: &Step, b: &Step) -> Ordering {
        let order = |node: &usize| self.order.get(*node).copied().unwrap_or(NO_NODE);
        (a.timestamp_ms, a.message_id)
            .cmp(&(b.timestamp_ms, b.message_id))
            .then_with(|| {
                self.nodes(a)
                    .iter()
                    .map(order)
                    .cmp(self.nodes(b).iter().map(order))
            })
            .then_with(|| self.claims(a).cmp(self.claims(b)))
    }

    fn identifier(&self, node: usize) -> Option<&'a Identifier> {
        self.ids.get(node).copied()
    }

    /// What identifies a conflict across partitions: time, message ID, refused identifier and
    /// reason (the profiles involved may have changed).
    fn conflict_key(&self, pending: &Pending) -> Option<ConflictKey<'a>> {
        let step = self.steps.get(pending.step)?;
        Some((
            step.timestamp_ms,
            step.message_id,
            pending.refused,
            pending.reason,
        ))
    }

    fn reason(&self, refusal: Refusal) -> ConflictReason {
        match refusal {
            Refusal::TypeLimit(t) => self
                .limited
                .get(t)
                .map_or(ConflictReason::MaxIdentifiers, |(kind, _)| {
                    ConflictReason::TypeLimit((*kind).clone())
                }),
            Refusal::MaxIdentifiers => ConflictReason::MaxIdentifiers,
            Refusal::MaxMerges => ConflictReason::MaxMerges,
            Refusal::Unproven => ConflictReason::Unproven,
        }
    }
}

/// Moves the distinct values of a sorted slice to its front; returns how many there are.
fn dedup_sorted(v: &mut [usize]) -> usize {
    let mut kept = 0;
    for read in 0..v.len() {
        let Some(&x) = v.get(read) else { break };
        if kept == 0 || v.get(kept - 1) != Some(&x) {
            if let Some(slot) = v.get_mut(kept) {
                *slot = x;
            }
            kept += 1;
        }
    }
    kept
}

/// Numbers the distinct identifiers of `occurrences` (fingerprint, identifier, position);
/// returns them by number, and each position's number. Sorting by fingerprint makes almost
/// every comparison an integer one; a run of equal fingerprints that holds different identifiers
/// (a collision) is sorted by identifier. Unlike a hash table, this stays `O(n log n)` however
/// many values an attacker makes collide.
fn intern<'a>(
    mut occurrences: Vec<(u64, &'a Identifier, usize)>,
) -> (Vec<&'a Identifier>, Vec<usize>) {
    let mut numbers = vec![0; occurrences.len()];
    occurrences.sort_unstable_by_key(|(fp, _, _)| *fp);
    let mut distinct: Vec<&'a Identifier> = Vec::new();
    for run in occurrences.chunk_by_mut(|a, b| a.0 == b.0) {
        let Some(&(_, first, _)) = run.first() else {
            continue;
        };
        if run.iter().any(|(_, id, _)| *id != first) {
            run.sort_unstable_by(|a, b| a.1.cmp(b.1));
        }
        let mut previous: Option<&Identifier> = None;
        for (_, id, at) in run.iter() {
            if previous != Some(*id) {
                distinct.push(*id);
                previous = Some(*id);
            }
            if let Some(slot) = numbers.get_mut(*at) {
                *slot = distinct.len() - 1;
            }
        }
    }
    (distinct, numbers)
}

/// A cheap fingerprint of a value from its length and its first and last eight bytes (equal
/// values, equal fingerprints; [`intern`] resolves collisions).
fn fingerprint(value: &str) -> u64 {
    let bytes = value.as_bytes();
    let word = |part: Option<&[u8]>| match part.map(<[u8; 8]>::try_from) {
        Some(Ok(w)) => u64::from_le_bytes(w),
        // Shorter than eight bytes: head and tail are the whole value.
        _ => bytes
            .iter()
            .fold(0, |w: u64, b| w.rotate_left(8) ^ u64::from(*b)),
    };
    let head = word(bytes.get(..8));
    let tail = word(bytes.get(bytes.len().saturating_sub(8)..));
    (head ^ tail.rotate_left(29) ^ (bytes.len() as u64).rotate_left(53))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// [`ConflictReason`] with the type as an index into [`Prepared::limited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    TypeLimit(usize),
    MaxIdentifiers,
    MaxMerges,
    Unproven,
}

/// A refused union: the step's best identifier did not absorb `refused`'s cluster.
#[derive(Debug, Clone, Copy)]
struct Pending {
    step: usize,
    refused: usize,
    reason: Refusal,
}

/// See [`Prepared::conflict_key`].
type ConflictKey<'a> = (i64, &'a str, usize, Refusal);

/// The partition before a link is added, as far as [`stitch`] needs it.
struct Outcome<'a> {
    /// See [`Graph::best`].
    best: Vec<usize>,
    conflicts: BTreeSet<ConflictKey<'a>>,
}

/// A union-find cluster's bookkeeping (held by its root).
#[derive(Debug, Clone, Default)]
struct Cluster {
    /// Members per limited type (index into [`Prepared::limited`], ascending); unlimited types
    /// can never break a limit and are not counted.
    counts: Vec<(usize, usize)>,
    size: usize,
    merges: usize,
    /// The step at which its oldest identifier first appeared: the cluster existed before the
    /// current link iff this is below the current step.
    born: usize,
}

impl Cluster {
    fn count(&self, limited_type: usize) -> usize {
        self.counts
            .binary_search_by_key(&limited_type, |(t, _)| *t)
            .ok()
            .and_then(|at| self.counts.get(at))
            .map_or(0, |(_, n)| *n)
    }
}

/// Union-find over nodes, processing steps in order and checking the rules at every union.
#[derive(Debug, Clone)]
struct Graph {
    /// Each node's parent; [`NO_NODE`] until the node first appears.
    parent: Vec<usize>,
    clusters: Vec<Cluster>,
    /// Steps processed so far: the current step's number.
    step: usize,
    pending: Vec<Pending>,
}

impl Graph {
    fn new(prepared: &Prepared) -> Self {
        let n = prepared.ids.len();
        Self {
            parent: vec![NO_NODE; n],
            clusters: vec![Cluster::default(); n],
            step: 0,
            pending: Vec::new(),
        }
    }

    /// The root of `node`'s cluster, creating a singleton for a node not seen before.
    fn node(&mut self, node: usize, prepared: &Prepared) -> usize {
        match self.parent.get_mut(node) {
            Some(p) if *p == NO_NODE => *p = node,
            _ => return self.find(node),
        }
        if let Some(cluster) = self.clusters.get_mut(node) {
            let limited_type = prepared.limited_type.get(node).copied().unwrap_or(NO_NODE);
            *cluster = Cluster {
                counts: if limited_type == NO_NODE {
                    Vec::new()
                } else {
                    vec![(limited_type, 1)]
                },
                size: 1,
                merges: 0,
                born: self.step,
            };
        }
        node
    }

    fn find(&mut self, x: usize) -> usize {
        let mut root = x;
        while let Some(&p) = self.parent.get(root) {
            if p == root || p == NO_NODE {
                break;
            }
            root = p;
        }
        let mut cur = x;
        while cur != root {
            match self.parent.get_mut(cur) {
                Some(p) => cur = std::mem::replace(p, root),
                None => break,
            }
        }
        root
    }

    fn established(&self, cluster: &Cluster) -> bool {
        cluster.born < self.step
    }

    /// Why the clusters rooted at `a` and `b` may not be joined, if they may not.
    fn refusal(&self, a: usize, b: usize, prepared: &Prepared, rules: &Rules) -> Option<Refusal> {
        let (Some(ca), Some(cb)) = (self.clusters.get(a), self.clusters.get(b)) else {
            return None;
        };
        // Every cluster keeps its limits, so only types present in `b` can break one; `counts`
        // is in report order, so the first breach is the one to report.
        let breached = cb.counts.iter().find(|(t, nb)| {
            prepared
                .limited
                .get(*t)
                .is_some_and(|(_, limit)| ca.count(*t).saturating_add(*nb) > *limit)
        });
        if let Some((t, _)) = breached {
            return Some(Refusal::TypeLimit(*t));
        }
        if ca.size.saturating_add(cb.size) > rules.max_identifiers.max(1) {
            return Some(Refusal::MaxIdentifiers);
        }
        if self.established(ca)
            && self.established(cb)
            && ca.merges.saturating_add(cb.merges).saturating_add(1) > rules.max_merges
        {
            return Some(Refusal::MaxMerges);
        }
        None
    }

    /// Whether only a claim would join the cluster rooted at `a` (reached through a proven
    /// identifier of the step when `a_proven`) with the one rooted at `b` (reached through a
    /// claimed identifier when `b_claimed`). A side reached only through claims joins only if it
    /// is new in this step: naming someone's anonymous ID must not hand their history to the
    /// sender's cookie or verified user ID, nor attach the sender's IDs to their profile.
    fn unproven(&self, a: usize, a_proven: bool, b: usize, b_claimed: bool) -> bool {
        let established =
            |root: usize| self.clusters.get(root).is_some_and(|c| self.established(c));
        (!a_proven && established(a)) || (b_claimed && established(b))
    }

    /// Joins the clusters rooted at `a` and `b`; returns the new root.
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (Some(ca), Some(cb)) = (self.clusters.get(a), self.clusters.get(b)) else {
            return a;
        };
        let is_merge = self.established(ca) && self.established(cb);
        let (root, child) = if cb.size > ca.size { (b, a) } else { (a, b) };
        let small = self
            .clusters
            .get_mut(child)
            .map(std::mem::take)
            .unwrap_or_default();
        if let Some(big) = self.clusters.get_mut(root) {
            for (t, n) in small.counts {
                match big.counts.binary_search_by_key(&t, |(bt, _)| *bt) {
                    Ok(at) => {
                        if let Some((_, bn)) = big.counts.get_mut(at) {
                            *bn = bn.saturating_add(n);
                        }
                    }
                    Err(at) => big.counts.insert(at, (t, n)),
                }
            }
            big.size = big.size.saturating_add(small.size);
            big.merges = big
                .merges
                .saturating_add(small.merges)
                .saturating_add(usize::from(is_merge));
            big.born = big.born.min(small.born);
        }
        if let Some(p) = self.parent.get_mut(child) {
            *p = root;
        }
        root
    }

    /// Processes one step: starts from the cluster of the link's best identifier and merges in
    /// every other identifier's cluster, in priority order, where the rules allow.
    fn apply(&mut self, step: usize, prepared: &Prepared, rules: &Rules) {
        let (nodes, claims) = prepared.steps.get(step).map_or((&[][..], &[][..]), |s| {
            (prepared.nodes(s), prepared.claims(s))
        });
        let claimed = |at: usize| claims.get(at).copied().unwrap_or(false);
        if let Some((&first, rest)) = nodes.split_first() {
            let mut anchor = self.node(first, prepared);
            let mut anchor_proven = !claimed(0);
            // Proven identifiers first: a claimed one the proven ones already joined is no
            // conflict.
            let order = (0..rest.len())
                .filter(|at| !claimed(at + 1))
                .chain((0..rest.len()).filter(|at| claimed(at + 1)));
            for at in order {
                let Some(&node) = rest.get(at) else { continue };
                let node_claimed = claimed(at + 1);
                let other = self.node(node, prepared);
                if other == anchor {
                    anchor_proven |= !node_claimed;
                    continue;
                }
                let refusal = if self.unproven(anchor, anchor_proven, other, node_claimed) {
                    Some(Refusal::Unproven)
                } else {
                    self.refusal(anchor, other, prepared, rules)
                };
                match refusal {
                    None => {
                        anchor = self.union(anchor, other);
                        anchor_proven |= !node_claimed;
                    }
                    Some(reason) => self.pending.push(Pending {
                        step,
                        refused: node,
                        reason,
                    }),
                }
            }
        }
        self.step += 1;
    }

    /// Every node's profile, as the best node of its cluster ([`NO_NODE`] for nodes that never
    /// appeared). Nodes are in canonical order, so a cluster's first node is its best.
    fn best(&mut self) -> Vec<usize> {
        let n = self.parent.len();
        let mut best_of_root = vec![NO_NODE; n];
        let mut best = vec![NO_NODE; n];
        for node in 0..n {
            if self.parent.get(node) == Some(&NO_NODE) {
                continue;
            }
            let root = self.find(node);
            if let Some(b) = best_of_root.get_mut(root) {
                if *b == NO_NODE {
                    *b = node;
                }
                if let Some(slot) = best.get_mut(node) {
                    *slot = *b;
                }
            }
        }
        best
    }

    /// What [`stitch`] compares the new partition with.
    fn outcome<'a>(&mut self, prepared: &Prepared<'a>) -> Outcome<'a> {
        Outcome {
            best: self.best(),
            conflicts: self
                .pending
                .iter()
                .filter_map(|p| prepared.conflict_key(p))
                .collect(),
        }
    }

    /// The refused unions as conflicts, each with the key [`stitch`] compares them by, sorted
    /// and without repeats.
    fn conflicts(
        &self,
        prepared: &Prepared,
        best: &[usize],
        names: &mut ProfileNames,
    ) -> Vec<(Conflict, Pending)> {
        let mut conflicts: Vec<(Conflict, Pending)> = self
            .pending
            .iter()
            .filter_map(|p| {
                let step = prepared.steps.get(p.step)?;
                let anchor = *prepared.nodes(step).first()?;
                Some((
                    Conflict {
                        timestamp_ms: step.timestamp_ms,
                        message_id: step.message_id.to_owned(),
                        profile: names.of(*best.get(anchor)?, prepared)?,
                        refused: prepared.identifier(p.refused)?.clone(),
                        refused_profile: names.of(*best.get(p.refused)?, prepared)?,
                        reason: prepared.reason(p.reason),
                    },
                    *p,
                ))
            })
            .collect();
        conflicts.sort_by(|a, b| a.0.cmp(&b.0));
        conflicts.dedup_by(|a, b| a.0 == b.0);
        conflicts
    }
}

/// Profile IDs by best node, each hashed once.
struct ProfileNames<'r> {
    names: Vec<Option<ProfileId>>,
    salt: Option<&'r str>,
}

impl<'r> ProfileNames<'r> {
    fn new(prepared: &Prepared, rules: &'r Rules) -> Self {
        Self {
            names: vec![None; prepared.ids.len()],
            salt: rules.profile_salt.as_deref(),
        }
    }

    fn of(&mut self, best: usize, prepared: &Prepared) -> Option<ProfileId> {
        let slot = self.names.get_mut(best)?;
        if slot.is_none() {
            *slot = Some(ProfileId::salted(prepared.identifier(best)?, self.salt));
        }
        slot.clone()
    }
}

/// Resolves links into profiles. The result depends only on the set of links (see the
/// [module docs](super)): any permutation or repetition of `links` gives the same partition.
pub fn partition(links: &[Link], rules: &Rules) -> Partition {
    let prepared = Prepared::new(links, None, rules);
    let mut graph = Graph::new(&prepared);
    for step in 0..prepared.steps.len() {
        graph.apply(step, &prepared, rules);
    }
    let best = graph.best();
    let mut names = ProfileNames::new(&prepared, rules);
    let mut profile_at = vec![NO_NODE; best.len()];
    let mut profiles: Vec<Profile> = Vec::new();
    for (node, &b) in best.iter().enumerate() {
        let (Some(slot), Some(id)) = (profile_at.get_mut(b), prepared.identifier(node)) else {
            continue;
        };
        if *slot == NO_NODE {
            let Some(profile_id) = names.of(b, &prepared) else {
                continue;
            };
            *slot = profiles.len();
            profiles.push(Profile {
                id: profile_id,
                identifiers: Vec::new(),
            });
        }
        if let Some(profile) = profiles.get_mut(*slot) {
            profile.identifiers.push(id.clone());
        }
    }
    profiles.sort_by(|a, b| a.id.cmp(&b.id));
    let conflicts = graph
        .conflicts(&prepared, &best, &mut names)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    Partition {
        profiles,
        conflicts,
    }
}

/// Adds `new` to `fragment` (all stored links of the link-graph components touching `new`'s
/// identifiers, see [`component_links`](super::component_links)) and reports what changes. Pure: it compares
/// `partition(fragment)` with `partition(fragment + new)`, so the result does not depend on the
/// order links arrived in. Feeding a stored link again is a no-op plan.
///
/// Both partitions process the same sequence up to `new`'s place in it, so that prefix is
/// processed once; when `new` sorts last (the usual case: the newest event) nothing is processed
/// twice.
pub fn stitch(fragment: &[Link], new: Link, rules: &Rules) -> StitchPlan {
    let prepared = Prepared::new(fragment, Some(&new), rules);
    let steps = prepared.steps.len();
    let added = prepared.steps.iter().position(|s| s.added);
    let split = added.unwrap_or(steps);

    // The profiles and conflicts before are those of every stored step; `new` only changes
    // what comes from its own step on.
    let mut after = Graph::new(&prepared);
    for step in 0..split {
        after.apply(step, &prepared, rules);
    }
    let before = if split + 1 >= steps {
        after.outcome(&prepared)
    } else {
        let mut before = after.clone();
        for step in split + 1..steps {
            before.apply(step, &prepared, rules);
        }
        before.outcome(&prepared)
    };
    for step in split..steps {
        after.apply(step, &prepared, rules);
    }

    let mut names = ProfileNames::new(&prepared, rules);
    let best_after = after.best();
    let profile_after =
        |node: usize, names: &mut ProfileNames| names.of(*best_after.get(node)?, &prepared);

    let profile_id = prepared
        .added_best
        .and_then(|node| profile_after(node, &mut names));
    let assignments = prepared
        .by_order
        .iter()
        .filter_map(|&node| {
            let id = prepared.identifier(node)?;
            Some((id.clone(), profile_after(node, &mut names)?))
        })
        .collect();

    // A profile is named by its best node: the profiles before are the distinct best nodes.
    let mut surviving: Vec<ProfileId> = distinct_best(&best_after)
        .filter_map(|b| names.of(b, &prepared))
        .collect();
    surviving.sort_unstable();
    let mut merges: Vec<Merge> = distinct_best(&before.best)
        .filter_map(|b| {
            let from = names.of(b, &prepared)?;
            if surviving.binary_search(&from).is_ok() {
                return None;
            }
            Some(Merge {
                from,
                into: profile_after(b, &mut names)?,
                cause_message_id: new.message_id.clone(),
            })
        })
        .collect();
    merges.sort_by(|a, b| a.from.cmp(&b.from));

    let conflicts = after
        .conflicts(&prepared, &best_after, &mut names)
        .into_iter()
        .filter(|(_, p)| {
            prepared
                .conflict_key(p)
                .is_none_or(|key| !before.conflicts.contains(&key))
        })
        .map(|(c, _)| c)
        .collect();
    StitchPlan {
        profile_id,
        assignments,
        merges,
        conflicts,
        is_new_link: added.is_some(),
    }
}

/// The distinct best nodes of [`Graph::best`]'s result: one per profile.
fn distinct_best(best: &[usize]) -> impl Iterator<Item = usize> + '_ {
    best.iter()
        .enumerate()
        .filter(|(node, b)| *node == **b)
        .map(|(_, b)| *b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::{anon, cookie, email, link, owner_of, uid};
    use crate::identity::{component_links, Link, Partition};
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn claim(ts: i64, mid: &str, ids: &[Identifier], claimed: &[&Identifier]) -> Link {
        link(ts, mid, ids).with_claimed(claimed.iter().map(|&id| id.clone()).collect())
    }

    #[test]
    fn a_claimed_anonymous_id_never_joins_an_existing_profile() {
        let rules = Rules::default();
        let (x, victim, attacker) = (anon("x"), cookie("victim"), cookie("attacker"));
        let links = [
            claim(1, "m1", &[victim.clone(), x.clone()], &[&x]),
            claim(2, "m2", &[uid("u1"), victim.clone(), x.clone()], &[&x]),
            // Another browser names the victim's anonymous ID.
            claim(3, "m3", &[attacker.clone(), x.clone()], &[&x]),
        ];
        let p = partition(&links, &rules);
        assert_eq!(owner_of(&p, &x), owner_of(&p, &uid("u1")));
        assert_ne!(owner_of(&p, &attacker), owner_of(&p, &uid("u1")));
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].reason.code(), "unverified_claim");
        assert_eq!(p.conflicts[0].refused, x);
    }

    #[test]
    fn a_verified_user_cannot_claim_another_browsers_anonymous_id() {
        let rules = Rules::default();
        let x = anon("x");
        let links = [
            claim(1, "m1", &[cookie("victim"), x.clone()], &[&x]),
            claim(2, "m2", &[uid("mallory"), cookie("mine"), x.clone()], &[&x]),
        ];
        let p = partition(&links, &rules);
        assert_ne!(owner_of(&p, &x), owner_of(&p, &uid("mallory")));
        assert_eq!(owner_of(&p, &x), owner_of(&p, &cookie("victim")));
    }

    #[test]
    fn a_cookie_brings_new_anonymous_ids_into_its_profile() {
        let rules = Rules::default();
        let c = cookie("c");
        let links = [
            claim(1, "m1", &[c.clone(), anon("x")], &[&anon("x")]),
            claim(2, "m2", &[c.clone(), anon("x2")], &[&anon("x2")]),
        ];
        let p = partition(&links, &rules);
        assert_eq!(owner_of(&p, &anon("x2")), owner_of(&p, &anon("x")));
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn verified_logins_on_two_devices_make_one_profile() {
        let rules = Rules::default();
        let (c1, c2, x1, x2) = (cookie("c1"), cookie("c2"), anon("x1"), anon("x2"));
        let links = [
            claim(1, "m1", &[c1.clone(), x1.clone()], &[&x1]),
            claim(2, "m2", &[c2.clone(), x2.clone()], &[&x2]),
            claim(3, "m3", &[uid("u"), c1.clone(), x1.clone()], &[&x1]),
            claim(4, "m4", &[uid("u"), c2.clone(), x2.clone()], &[&x2]),
        ];
        let p = partition(&links, &rules);
        assert_eq!(p.profiles.len(), 1);
        assert_eq!(p.profiles[0].identifiers.len(), 5);
    }

    #[test]
    fn claims_alone_never_merge_two_browsers() {
        let rules = Rules::default();
        let (x, y) = (anon("x"), anon("y"));
        let links = [
            claim(1, "m1", std::slice::from_ref(&x), &[&x]),
            claim(2, "m2", std::slice::from_ref(&y), &[&y]),
            claim(3, "m3", &[x.clone(), y.clone()], &[&x, &y]),
        ];
        let p = partition(&links, &rules);
        assert_ne!(owner_of(&p, &x), owner_of(&p, &y));
        // New claimed IDs seen together for the first time do belong together.
        let p = partition(&links[2..], &rules);
        assert_eq!(owner_of(&p, &x), owner_of(&p, &y));
    }

    #[test]
    fn never_merges_two_user_ids() {
        let rules = Rules::default();
        let links = [
            link(1, "m1", &[uid("u1"), anon("a")]),
            link(2, "m2", &[uid("u2"), anon("a")]),
            link(3, "m3", &[uid("u1"), uid("u2")]),
        ];
        let p = partition(&links, &rules);
        assert_ne!(owner_of(&p, &uid("u1")), owner_of(&p, &uid("u2")));
        // The anonymous ID stays with the user who claimed it first.
        assert_eq!(owner_of(&p, &anon("a")), owner_of(&p, &uid("u1")));
        let reasons: Vec<_> = p.conflicts.iter().map(|c| c.reason.code()).collect();
        assert_eq!(reasons, ["user_id_conflict", "user_id_conflict"]);
        let first = &p.conflicts[0];
        assert_eq!(first.message_id, "m2");
        assert_eq!(first.refused, anon("a"));
        assert_eq!(first.profile, ProfileId::for_identifier(&uid("u2")));
        assert_eq!(first.refused_profile, ProfileId::for_identifier(&uid("u1")));
    }

    #[test]
    fn anonymous_browsing_then_sign_in_joins_one_profile() {
        let rules = Rules::default();
        let links = [
            link(1, "page1", &[anon("a"), cookie("c")]),
            link(2, "page2", &[anon("a")]),
            link(
                3,
                "identify",
                &[uid("u1"), anon("a"), email("u1@shop.example")],
            ),
            link(4, "later", &[cookie("c"), anon("a2")]),
        ];
        let p = partition(&links, &rules);
        assert_eq!(p.profiles.len(), 1);
        let profile = &p.profiles[0];
        assert_eq!(profile.id, ProfileId::for_identifier(&uid("u1")));
        assert_eq!(profile.identifiers[0], uid("u1"));
        assert_eq!(profile.identifiers.len(), 5);
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn email_limit_records_conflict() {
        let rules = Rules::default();
        let mut links: Vec<Link> = (0..6)
            .map(|i| {
                link(
                    i,
                    &format!("m{i}"),
                    &[uid("u1"), email(&format!("e{i}@x.example"))],
                )
            })
            .collect();
        links.reverse();
        let p = partition(&links, &rules);
        let main = p.profile_of(&uid("u1")).unwrap();
        assert_eq!(main.identifiers.len(), 6);
        let lone = p.profile_of(&email("e5@x.example")).unwrap();
        assert_eq!(lone.identifiers, [email("e5@x.example")]);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].message_id, "m5");
        assert_eq!(
            p.conflicts[0].reason,
            ConflictReason::TypeLimit(IdType::Email)
        );
        assert_eq!(p.conflicts[0].reason.code(), "identifier_limit");
    }

    #[test]
    fn identifiers_with_one_fingerprint_stay_apart() {
        // Same length and same first and last eight bytes: one fingerprint, three identifiers.
        let a = anon("AAAAAAAA1BBBBBBBB");
        let b = anon("AAAAAAAA2BBBBBBBB");
        let u = uid("AAAAAAAA1BBBBBBBB");
        assert_eq!(fingerprint(&a.value), fingerprint(&b.value));
        let links = [
            link(1, "m1", &[a.clone(), cookie("c")]),
            link(2, "m2", std::slice::from_ref(&b)),
            link(3, "m3", &[u.clone(), a.clone()]),
        ];
        let p = partition(&links, &Rules::default());
        assert_eq!(p.profiles.len(), 2);
        let user = ProfileId::for_identifier(&u);
        assert_eq!(owner_of(&p, &a), user);
        assert_eq!(owner_of(&p, &cookie("c")), user);
        assert_eq!(p.profile_of(&b).unwrap().identifiers, [b]);
    }

    #[test]
    fn max_identifiers_cap_records_conflict() {
        let rules = Rules {
            max_identifiers: 3,
            ..Rules::default()
        };
        let links: Vec<Link> = (0..4)
            .map(|i| link(i, &format!("m{i}"), &[cookie("c"), anon(&format!("a{i}"))]))
            .collect();
        let p = partition(&links, &rules);
        assert_eq!(p.profile_of(&cookie("c")).unwrap().identifiers.len(), 3);
        assert_eq!(p.conflicts.len(), 2);
        assert!(p
            .conflicts
            .iter()
            .all(|c| c.reason == ConflictReason::MaxIdentifiers));
    }

    #[test]
    fn max_merges_cap_records_conflict_but_new_identifiers_still_attach() {
        let rules = Rules {
            max_merges: 1,
            ..Rules::default()
        };
        let links = [
            link(1, "m1", &[anon("a1")]),
            link(2, "m2", &[anon("a2")]),
            link(3, "m3", &[anon("a3")]),
            link(4, "m4", &[uid("u"), anon("a1"), anon("new1")]), // attach: no merge
            link(5, "m5", &[uid("u"), anon("a2")]),               // merge 1
            link(6, "m6", &[uid("u"), anon("a3")]),               // merge 2: refused
            link(7, "m7", &[uid("u"), anon("new2")]),             // attach: fine
        ];
        let p = partition(&links, &rules);
        let main = p.profile_of(&uid("u")).unwrap();
        assert_eq!(main.identifiers.len(), 5);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].message_id, "m6");
        assert_eq!(p.conflicts[0].reason.code(), "max_merges");
    }

    #[test]
    fn duplicates_and_order_do_not_matter() {
        let rules = Rules::default();
        let links = vec![
            link(1, "m1", &[uid("u1"), anon("a")]),
            link(1, "m0", &[uid("u2"), anon("a")]),
            link(2, "m2", &[anon("a"), cookie("c")]),
        ];
        let mut shuffled = links.clone();
        shuffled.reverse();
        shuffled.push(link(1, "m0", &[anon("a"), uid("u2"), anon("a")]));
        assert_eq!(partition(&links, &rules), partition(&shuffled, &rules));
        // m0 sorts before m1 at the same millisecond, so u2 claims the anonymous ID.
        let p = partition(&links, &rules);
        assert_eq!(owner_of(&p, &anon("a")), owner_of(&p, &uid("u2")));
    }

    #[test]
    fn priority_decides_the_best_identifier() {
        let rules = Rules::from_json(&json!({"priority": ["cookie_id"]})).unwrap();
        let p = partition(&[link(1, "m", &[uid("u1"), cookie("c")])], &rules);
        assert_eq!(p.profiles[0].id, ProfileId::for_identifier(&cookie("c")));
        assert_eq!(p.profiles[0].identifiers, [cookie("c"), uid("u1")]);
    }

    #[test]
    fn stitch_of_the_same_link_twice_is_a_no_op() {
        let rules = Rules::default();
        let first = link(1, "m1", &[anon("a"), cookie("c")]);
        let plan1 = stitch(&[], first.clone(), &rules);
        assert!(plan1.is_new_link);
        assert!(plan1.merges.is_empty());
        let plan2 = stitch(std::slice::from_ref(&first), first.clone(), &rules);
        assert!(!plan2.is_new_link);
        assert!(plan2.merges.is_empty());
        assert!(plan2.conflicts.is_empty());
        assert_eq!(plan1.assignments, plan2.assignments);
        assert_eq!(plan1.profile_id, plan2.profile_id);
    }

    #[test]
    fn stitch_reports_absorbed_profiles_as_merges() {
        let rules = Rules::default();
        let store = vec![
            link(1, "m1", &[anon("a1")]),
            link(2, "m2", &[anon("a2"), cookie("c")]),
        ];
        let sign_in = link(3, "m3", &[uid("u1"), anon("a1"), cookie("c")]);
        let fragment = component_links(&store, &sign_in.identifiers, &rules);
        assert_eq!(fragment.len(), 2);
        let plan = stitch(&fragment, sign_in, &rules);
        let user = ProfileId::for_identifier(&uid("u1"));
        assert_eq!(plan.profile_id, Some(user.clone()));
        let mut expected = vec![
            Merge {
                from: ProfileId::for_identifier(&anon("a1")),
                into: user.clone(),
                cause_message_id: "m3".into(),
            },
            Merge {
                from: ProfileId::for_identifier(&cookie("c")),
                into: user.clone(),
                cause_message_id: "m3".into(),
            },
        ];
        expected.sort();
        assert_eq!(plan.merges, expected);
        assert_eq!(plan.assignments.len(), 4);
        assert!(plan.assignments.iter().all(|(_, p)| *p == user));
    }

    #[test]
    fn stitch_reports_only_new_conflicts() {
        let rules = Rules::default();
        let store = vec![link(1, "m1", &[uid("u1"), anon("a")])];
        let plan = stitch(&store, link(2, "m2", &[uid("u2"), anon("a")]), &rules);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.profile_id, Some(ProfileId::for_identifier(&uid("u2"))));
        let mut store = store;
        store.push(link(2, "m2", &[uid("u2"), anon("a")]));
        let plan = stitch(&store, link(3, "m3", &[anon("a"), cookie("c")]), &rules);
        assert!(plan.conflicts.is_empty());
        assert!(plan.merges.is_empty());
        assert_eq!(plan.profile_id, Some(ProfileId::for_identifier(&uid("u1"))));
    }

    #[test]
    fn late_event_is_ordered_by_event_time() {
        let rules = Rules::default();
        let store = vec![link(10, "m10", &[uid("u2"), anon("a")])];
        // u1 used the browser earlier but that event arrives late: it takes the anonymous ID.
        let plan = stitch(&store, link(5, "m5", &[uid("u1"), anon("a")]), &rules);
        let u1 = ProfileId::for_identifier(&uid("u1"));
        assert!(plan.assignments.contains(&(anon("a"), u1)));
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].message_id, "m10");
    }

    // ---- properties ----

    fn tight_rules() -> Rules {
        let mut rules = Rules::default();
        rules.limits.insert(IdType::Email, Some(2));
        rules.limits.insert(IdType::CookieId, Some(2));
        rules.max_identifiers = 5;
        rules.max_merges = 1;
        rules
    }

    fn arb_rules() -> impl Strategy<Value = Rules> {
        prop_oneof![Just(Rules::default()), Just(tight_rules())]
    }

    fn arb_link() -> impl Strategy<Value = Link> {
        (
            0i64..12,
            0u8..30,
            proptest::option::of(0u8..4),
            proptest::collection::vec(0u8..5, 0..3),
            proptest::option::of(0u8..6),
            proptest::option::of(0u8..4),
            any::<bool>(),
        )
            .prop_filter_map(
                "a link needs an identifier",
                |(ts, m, u, es, a, c, claim)| {
                    let mut ids: Vec<Identifier> = Vec::new();
                    ids.extend(u.map(|u| uid(&format!("u{u}"))));
                    ids.extend(es.iter().map(|e| email(&format!("e{e}@x.example"))));
                    ids.extend(a.map(|a| anon(&format!("a{a}"))));
                    ids.extend(c.map(|c| cookie(&format!("c{c}"))));
                    // A browser's link: its anonymous ID is only claimed.
                    let claimed: Vec<Identifier> = if claim {
                        a.map(|a| anon(&format!("a{a}"))).into_iter().collect()
                    } else {
                        Vec::new()
                    };
                    (!ids.is_empty())
                        .then(|| Link::new(ts, format!("m{m}"), ids).with_claimed(claimed))
                },
            )
    }

    fn arb_links() -> impl Strategy<Value = Vec<Link>> {
        proptest::collection::vec(arb_link(), 1..24)
            .prop_flat_map(|links| {
                let n = links.len();
                (Just(links), proptest::collection::vec(0..n, 0..4))
            })
            .prop_map(|(mut links, dups)| {
                for i in dups {
                    if let Some(l) = links.get(i).cloned() {
                        links.push(l);
                    }
                }
                links
            })
    }

    fn arb_case() -> impl Strategy<Value = (Vec<Link>, Vec<Link>, Rules)> {
        (arb_links(), arb_rules()).prop_flat_map(|(links, rules)| {
            (Just(links.clone()).prop_shuffle(), Just(links), Just(rules))
        })
    }

    fn assignment_map(p: &Partition) -> BTreeMap<Identifier, ProfileId> {
        p.profiles
            .iter()
            .flat_map(|prof| {
                prof.identifiers
                    .iter()
                    .map(|id| (id.clone(), prof.id.clone()))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn partition_is_independent_of_order_and_duplicates((shuffled, links, rules) in arb_case()) {
            let a = partition(&links, &rules);
            let b = partition(&shuffled, &rules);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn folding_stitch_in_any_arrival_order_equals_the_batch_partition(
            (arrival, links, rules) in arb_case()
        ) {
            let mut store: Vec<Link> = Vec::new();
            let mut assigned: BTreeMap<Identifier, ProfileId> = BTreeMap::new();
            for new in arrival {
                let fragment = component_links(&store, &new.identifiers, &rules);
                let seen = fragment.iter().any(|l| rules.canonical_link(l) == rules.canonical_link(&new));
                let plan = stitch(&fragment, new.clone(), &rules);
                prop_assert_eq!(plan.is_new_link, !seen);
                if !plan.is_new_link {
                    prop_assert!(plan.merges.is_empty());
                    prop_assert!(plan.conflicts.is_empty());
                    for (id, p) in &plan.assignments {
                        prop_assert_eq!(assigned.get(id), Some(p));
                    }
                }
                for merge in &plan.merges {
                    prop_assert!(plan.assignments.iter().all(|(_, p)| *p != merge.from));
                }
                assigned.extend(plan.assignments);
                store.push(new);
            }
            prop_assert_eq!(assigned, assignment_map(&partition(&links, &rules)));
        }

        /// A link merges two existing profiles only when it proves an identifier of each: with
        /// any interleaving of verified and claimed links, a claim never moves a verified
        /// identifier out of its profile or anything into it.
        #[test]
        fn only_proven_identifiers_merge_existing_profiles((_, links, rules) in arb_case(), late in arb_link()) {
            let mut late = late;
            late.timestamp_ms = 100;
            let before = partition(&links, &rules);
            let mut all = links.clone();
            all.push(late.clone());
            let after = partition(&all, &rules);
            let proven: Vec<&Identifier> = late.identifiers.iter().filter(|id| !late.is_claimed(id)).collect();
            let proves = |profile: &Profile| profile.identifiers.iter().any(|id| proven.contains(&id));
            for p in &before.profiles {
                for q in &before.profiles {
                    if p.id >= q.id {
                        continue;
                    }
                    let (Some(first_p), Some(first_q)) = (p.identifiers.first(), q.identifiers.first()) else {
                        continue;
                    };
                    if after.profile_of(first_p).map(|x| &x.id) == after.profile_of(first_q).map(|x| &x.id) {
                        prop_assert!(proves(p) && proves(q), "{:?} merged {:?} and {:?}", late, p, q);
                    }
                }
            }
        }

        #[test]
        fn no_profile_holds_two_user_ids((_, links, rules) in arb_case()) {
            for profile in partition(&links, &rules).profiles {
                let users = profile.identifiers.iter().filter(|id| id.kind == IdType::UserId).count();
                prop_assert!(users <= 1);
                for (kind, n) in profile.identifiers.iter().fold(BTreeMap::new(), |mut m, id| {
                    *m.entry(id.kind.clone()).or_insert(0usize) += 1;
                    m
                }) {
                    prop_assert!(rules.limit(&kind).is_none_or(|l| n <= l));
                }
                prop_assert!(profile.identifiers.len() <= rules.max_identifiers);
            }
        }

        #[test]
        fn every_identifier_ends_in_exactly_one_profile((_, links, rules) in arb_case()) {
            let p = partition(&links, &rules);
            let input: BTreeSet<&Identifier> = links.iter().flat_map(|l| &l.identifiers).collect();
            let mut count: BTreeMap<&Identifier, usize> = BTreeMap::new();
            for id in p.profiles.iter().flat_map(|prof| &prof.identifiers) {
                *count.entry(id).or_insert(0) += 1;
            }
            prop_assert_eq!(count.keys().copied().collect::<BTreeSet<_>>(), input);
            prop_assert!(count.values().all(|n| *n == 1));
            let ids: BTreeSet<&ProfileId> = p.profiles.iter().map(|prof| &prof.id).collect();
            prop_assert_eq!(ids.len(), p.profiles.len());
        }
    }
}
