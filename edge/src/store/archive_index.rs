//! The archive's index by person (`archive_people`) where it lives: with one database, in `DB`
//! beside the objects it names (`core::archive::compact`'s statements join them); with
//! profile shards, each person key's entries in its home (`core::archive::spread`). Until the
//! walk that takes `DB`'s entries home is done, and while the shard count changes, a person's
//! entries are also read where they were.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::join_all;
use seam_core::archive::compact::{self, Entry, Indexed};
use seam_core::archive::spread::{self, home_key, ObjectId, INDEX_HOME_AGAIN};
use seam_core::plan::Statement;
use serde::Deserialize;

use crate::store::shards::Shards;
use crate::store::{d1, identity};

/// The erasure times of the tombstones `DB` holds among `people` (an erasure's, once its
/// transaction there committed).
pub async fn tombstones_in_db(
    db: &Shards,
    people: &BTreeSet<i64>,
) -> worker::Result<BTreeMap<i64, i64>> {
    #[derive(Deserialize)]
    struct Tombstone {
        person: String,
        erased_at: i64,
    }
    if people.is_empty() {
        return Ok(BTreeMap::new());
    }
    let people: Vec<i64> = people.iter().copied().collect();
    Ok(d1::rows::<Tombstone>(db, &compact::tombstones(&people))
        .await?
        .into_iter()
        .filter_map(|t| Some((t.person.parse().ok()?, t.erased_at)))
        .collect())
}

/// `plan` run in every profile shard but `DB` (while shrinking, the old ones too), at once:
/// each shard's results.
async fn in_shards(db: &Shards, plan: &[Statement]) -> Vec<worker::Result<Vec<worker::D1Result>>> {
    join_all(db.all()[1..].iter().map(|shard| d1::execute(shard, plan))).await
}

/// Whether `DB` holds `person`'s entries (with one database, everyone's).
pub fn in_db(db: &Shards, person: i64) -> bool {
    db.index_of(&home_key(person)) == 0
}

/// The databases that may hold entries of `people`: their homes, their previous homes while
/// the count changes, and `DB` until its walk is done.
async fn places(db: &Shards, people: &[i64]) -> BTreeMap<usize, Vec<i64>> {
    let mut out: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let legacy = identity::left_in_db(db, INDEX_HOME_AGAIN).await;
    for &person in people {
        let key = home_key(person);
        let mut at: BTreeSet<usize> = [db.index_of(&key)].into();
        at.extend(db.previous(&key));
        if legacy {
            at.insert(0);
        }
        for index in at {
            out.entry(index).or_default().push(person);
        }
    }
    out
}

#[derive(Deserialize)]
struct Object {
    object: i64,
}

/// Up to `limit` objects holding lines of any of `people`, newest first.
pub async fn objects_of(db: &Shards, people: &[i64], limit: u32) -> worker::Result<Vec<Indexed>> {
    if db.all().len() == 1 {
        return d1::rows(db, &compact::objects_of(people, limit)).await;
    }
    // Each database's newest few, a bound for a key on many objects (a shared device).
    let bound = limit.saturating_mul(4).max(100);
    let reads = places(db, people).await.into_iter().map(|(index, people)| {
        let read = spread::object_ids(&people, Some(bound));
        async move { d1::rows::<Object>(db.at(index), &read).await }
    });
    let mut ids = BTreeSet::new();
    for read in join_all(reads).await {
        ids.extend(read?.into_iter().map(|o| o.object));
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = ids.into_iter().collect();
    d1::rows(db, &spread::objects_by_id(&ids, limit)).await
}

/// A compaction round's entries for other databases (`compact::elsewhere`), written in their
/// homes: the objects made (or found) in `DB` first, for their IDs. Returns the people a
/// tombstone refused ([`spread::index`]): compaction leaves their rows.
pub async fn write(db: &Shards, entries: &[Entry]) -> worker::Result<BTreeSet<i64>> {
    if entries.is_empty() {
        return Ok(BTreeSet::new());
    }
    let results = d1::execute(db, &spread::objects_of_entries(entries)).await?;
    let objects: Vec<ObjectId> = d1::rows_of(&results, 1)?;
    let id: BTreeMap<(&str, i64, &str), i64> = objects
        .iter()
        .map(|o| ((o.claim.as_str(), o.day, o.source_id.as_str()), o.id))
        .collect();
    let mut homes: BTreeMap<usize, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for e in entries {
        let Some(&object) = id.get(&(e.claim.as_str(), e.day, e.source_id.as_str())) else {
            return Err(worker::Error::RustError(
                "an archive object was not made".into(),
            ));
        };
        homes
            .entry(db.index_of(&home_key(e.person)))
            .or_default()
            .push((e.person, object, e.at));
    }
    let writes = homes
        .into_iter()
        .map(|(index, rows)| async move { d1::execute(db.at(index), &spread::index(&rows)).await });
    let mut refused = BTreeSet::new();
    for write in join_all(writes).await {
        refused.extend(
            d1::rows_of::<spread::Refused>(&write?, 1)?
                .into_iter()
                .filter_map(|r| r.person.parse::<i64>().ok()),
        );
    }
    Ok(refused)
}

/// An erasure's first step in the shards (before its batch in `DB`): tombstones for `people`
/// in every shard, then the objects the shards' entries name, for `DB`'s batch to note
/// ([`spread::note_rewrites`]). Every shard, not only the people's homes: a tombstone there
/// refuses an entry a late compaction or a walk's copy would write.
pub async fn erase_first(db: &Shards, people: &[i64], now_ms: i64) -> worker::Result<Vec<i64>> {
    if people.is_empty() || db.all().len() == 1 {
        return Ok(Vec::new());
    }
    let mut ids = BTreeSet::new();
    for results in in_shards(db, &spread::tombstone_and_find(people, now_ms)).await {
        ids.extend(
            d1::rows_of::<Object>(&results?, 1)?
                .into_iter()
                .map(|o| o.object),
        );
    }
    Ok(ids.into_iter().collect())
}

/// An erasure's last step, once `DB` committed: the shards' entries of `people` deleted. A
/// failure is only logged: what is left names objects the erasure noted for rebuilding.
pub async fn erase_last(db: &Shards, people: &[i64]) {
    if people.is_empty() || db.all().len() == 1 {
        return;
    }
    for run in in_shards(db, &[spread::forget(people)]).await {
        if let Err(e) = run {
            worker::console_error!("erasure's archive index in a shard: {e}");
        }
    }
}

/// Objects' IDs one retention statement binds.
const EXPIRE_PAGE: u32 = spread::IDS_PER_STATEMENT as u32;

/// Retention's part in the shards, before `DB` deletes the objects of days before
/// `cutoff_day`: the entries naming them, and old tombstones. ([`forget_objects`] runs again
/// with the IDs `DB` deleted: a compaction or a walk may write an entry in between.)
pub async fn expire(db: &Shards, cutoff_day: i64) -> worker::Result<()> {
    if db.all().len() == 1 {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Id {
        id: i64,
    }
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let read = spread::expired_objects(cutoff_day, after, EXPIRE_PAGE);
        let ids: Vec<i64> = d1::rows::<Id>(db, &read)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        all.extend(&ids);
        match ids.last() {
            Some(&last) if ids.len() == EXPIRE_PAGE as usize => after = last,
            _ => break,
        }
    }
    forget_objects(db, &all).await?;
    for run in in_shards(db, &[spread::expire_tombstones(cutoff_day)]).await {
        run?;
    }
    Ok(())
}

/// The shards' entries naming the objects `ids`, deleted.
pub async fn forget_objects(db: &Shards, ids: &[i64]) -> worker::Result<()> {
    for chunk in ids.chunks(spread::IDS_PER_STATEMENT) {
        for run in in_shards(db, &[spread::expire(chunk)]).await {
            run?;
        }
    }
    Ok(())
}

/// A walk's move of `entries` (read in database `from`) to their homes: copied, then deleted
/// in `from` as far as the homes hold them. Returns how many moved (fewer than `entries` when
/// a recent tombstone refused some: [`spread::copy`]).
pub async fn settle(
    db: &Shards,
    from: usize,
    entries: &[(i64, i64)],
    now_ms: i64,
) -> worker::Result<usize> {
    let mut homes: BTreeMap<usize, Vec<(i64, i64)>> = BTreeMap::new();
    for &(person, object) in entries {
        homes
            .entry(db.index_of(&home_key(person)))
            .or_default()
            .push((person, object));
    }
    homes.remove(&from);
    let moves = homes.into_iter().map(|(index, rows)| async move {
        let plan: Vec<Statement> = vec![spread::copy(&rows, now_ms), spread::present(&rows)];
        let results = d1::execute(db.at(index), &plan).await?;
        Ok::<_, worker::Error>(
            d1::rows_of::<spread::WalkedEntry>(&results, 1)?
                .into_iter()
                .filter_map(|e| Some((e.key()?, e.object)))
                .collect::<Vec<_>>(),
        )
    });
    let mut landed = Vec::new();
    for moved in join_all(moves).await {
        landed.extend(moved?);
    }
    if !landed.is_empty() {
        d1::execute(db.at(from), &[spread::remove(&landed)]).await?;
    }
    Ok(landed.len())
}
