//! The outcome of resolving a request's links against the stored graph: who every identifier
//! belongs to now, what it belonged to before, and which profiles were absorbed.

use std::collections::HashMap;

use crate::identity::graph_plan::Assignment;
use crate::identity::{Identifier, Partition, ProfileId, Rules};

/// A resolution's outcome.
pub struct Resolved {
    /// Assignments as they were before this request.
    pub before: Vec<Assignment>,
    /// Profiles absorbed by this request: (from, into).
    pub merges: Vec<(String, String)>,
    /// The profile of every identifier in the components the request touched, as recomputed: a
    /// server-side batch asks once per link, so lookups must not scan the partition.
    profile_by_identifier: HashMap<Identifier, String>,
    /// The deployment's profile ID salt, which the partition's IDs were made with.
    salt: Option<String>,
}

impl Resolved {
    /// The outcome of recomputing `partition` (with `rules`) over assignments that were `before`.
    pub fn new(
        partition: &Partition,
        before: Vec<Assignment>,
        merges: Vec<(String, String)>,
        rules: &Rules,
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
            salt: rules.profile_salt.clone(),
        }
    }

    /// The profile an identifier belongs to now.
    pub fn profile_of(&self, identifier: &Identifier) -> String {
        match self.profile_by_identifier.get(identifier) {
            Some(profile) => profile.clone(),
            // Not in any touched component: its own singleton profile, named as the partition
            // names profiles.
            None => ProfileId::salted(identifier, self.salt.as_deref())
                .as_str()
                .to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{partition, IdType, Link};

    #[test]
    fn names_an_identifier_outside_the_partition_with_the_deployments_salt() {
        let rules = Rules {
            profile_salt: Some("s3cret".into()),
            ..Rules::default()
        };
        let a = Identifier::new(IdType::AnonymousId, "a");
        let p = partition(&[Link::new(1, "m1", vec![a.clone()])], &rules);
        let resolved = Resolved::new(&p, Vec::new(), Vec::new(), &rules);
        assert_eq!(resolved.profile_of(&a), p.profiles[0].id.as_str());
        let outside = Identifier::new(IdType::AnonymousId, "b");
        assert_eq!(
            resolved.profile_of(&outside),
            ProfileId::salted(&outside, Some("s3cret")).as_str()
        );
        assert_ne!(
            resolved.profile_of(&outside),
            ProfileId::for_identifier(&outside).as_str()
        );
    }
}
