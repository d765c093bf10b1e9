//! The D1 databases a request may touch. `DB` holds everything shared (events, the profiles'
//! rows, catalogue, deliveries, journeys) and is also shard 0 of the profiles'
//! personalisation state (state rows, segment memberships, co-occurrence evidence and each
//! shard's counts of it) and of the identity graph's links and assignments (each
//! identifier's, with a copy of every link it is in, `core::identity::spread`) and of the
//! archive's index by person (`core::archive::spread`). With `PROFILE_SHARDS = n`, shards 1 to n-1
//! are the bindings `PROFILES_1` … `PROFILES_{n-1}`, each migrated from
//! `edge/migrations-profiles`.
//! Which shard holds a profile is `core::personalise::shard`'s choice.
//!
//! While the count changes (`PROFILE_SHARDS_FROM` names the old one), a profile's state may
//! still be in its previous shard: [`Shards::previous`] names it, reads look there when the
//! home has nothing, and `store::personalisation::settle` moves it home.
//!
//! `Shards` derefs to `DB`: code that never touches a profile's state takes `&D1Database` and
//! is given the shared database.

use std::collections::BTreeMap;
use std::ops::Deref;

use seam_core::personalise::shard::Layout;
use worker::{D1Database, Env};

use crate::error::ApiError;
use crate::settings;

/// The shared database and the profile shards.
pub struct Shards {
    dbs: Vec<D1Database>,
    layout: Layout,
}

impl Shards {
    /// The databases the Worker's configuration binds. A shard count naming a binding that is
    /// not there is an error: falling back to fewer shards would look for every moved
    /// profile's state in the wrong database.
    pub fn of(env: &Env) -> Result<Self, ApiError> {
        let layout = Layout {
            shards: settings::profile_shards(env)?,
            from: settings::profile_shards_from(env)?,
        };
        let mut dbs = vec![env.d1("DB")?];
        for i in 1..layout.databases() {
            let binding = format!("PROFILES_{i}");
            dbs.push(env.d1(&binding).map_err(|_| {
                ApiError::Storage(format!(
                    "the profile shards need {binding}, which is not bound"
                ))
            })?);
        }
        Ok(Shards { dbs, layout })
    }

    /// The index of `profile_id`'s shard (where its state is written), or of an identifier's
    /// (its text: where its links are written).
    pub fn index_of(&self, profile_id: &str) -> usize {
        self.layout.home(profile_id) as usize
    }

    /// The shard `profile_id`'s state may still be in while the count changes.
    pub fn previous(&self, profile_id: &str) -> Option<usize> {
        self.layout.previous(profile_id).map(|s| s as usize)
    }

    /// The counts in force.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether the shard count is changing (`PROFILE_SHARDS_FROM`).
    pub fn moving(&self) -> bool {
        self.layout.from.is_some()
    }

    /// The database holding `profile_id`'s state.
    pub fn of_profile(&self, profile_id: &str) -> &D1Database {
        &self.dbs[self.index_of(profile_id)]
    }

    /// Every database bound for profiles' state, `DB` first (while shrinking, the old ones too).
    pub fn all(&self) -> &[D1Database] {
        &self.dbs
    }

    /// The shard at `index` (from [`Shards::index_of`] or [`Shards::group`]).
    pub fn at(&self, index: usize) -> &D1Database {
        &self.dbs[index]
    }

    /// `items` by the shard of the profile `profile` names, in shard order.
    pub fn group<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        profile: impl Fn(&T) -> &str,
    ) -> BTreeMap<usize, Vec<T>> {
        let mut out: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for item in items {
            out.entry(self.index_of(profile(&item)))
                .or_default()
                .push(item);
        }
        out
    }
}

impl Deref for Shards {
    type Target = D1Database;

    fn deref(&self) -> &D1Database {
        &self.dbs[0]
    }
}
