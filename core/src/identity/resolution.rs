//! The outcome of resolving a request's links against the stored graph: who every identifier
//! belongs to now, what it belonged to before, and which profiles were absorbed.

use std::collections::HashMap;

use crate::identity::graph_plan::Assignment;
use crate::identity::{Identifier, Partition, ProfileId};

/// A resolution's outcome.
pub struct Resolved {
    /// Assignments as they were before this request.
    pub before: Vec<Assignment>,
    /// Profiles absorbed by this request: (from, into).
    pub merges: Vec<(String, String)>,
    /// The profile of every identifier in the components the request touched, as recomputed: a
    /// server-side batch asks once per link, so lookups must not scan the partition.
    profile_by_identifier: HashMap<Identifier, String>,
}

impl Resolved {
    /// The outcome of recomputing `partition` over assignments that were `before`.
    pub fn new(
        partition: &Partition,
        before: Vec<Assignment>,
        merges: Vec<(String, String)>,
    ) -> Self {
        let profile_by_identifier = partition
            .profiles
            .iter()
            .flat_map(|p| {
                p.identifiers
                    .iter()
                    .map(|i| (i.clone(), p.id.as_str().to_owned()))
            })
            .collect();
        Resolved {
            before,
            merges,
            profile_by_identifier,
        }
    }

    /// The profile an identifier belongs to now.
    pub fn profile_of(&self, identifier: &Identifier) -> String {
        match self.profile_by_identifier.get(identifier) {
            Some(profile) => profile.clone(),
            // Not in any touched component: its own singleton profile.
            None => ProfileId::for_identifier(identifier).as_str().to_owned(),
        }
    }
}
