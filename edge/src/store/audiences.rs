//! Segments as audiences over the profile shards: each shard counts and lists its own members
//! (`core::personalise::segment::audience`); sizes add up and pages merge by profile ID.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use seam_core::personalise::segment::audience;
use seam_core::plan::Statement;
use serde::{Deserialize, Serialize};

use crate::store::d1;
use crate::store::shards::Shards;

/// A current member of a segment.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Deserialize, Serialize)]
pub struct Member {
    pub profile_id: String,
    pub entered_at: i64,
}

/// Every segment's current size, summed over the shards.
pub async fn sizes(db: &Shards) -> worker::Result<BTreeMap<String, i64>> {
    #[derive(Deserialize)]
    struct Size {
        segment: String,
        size: i64,
    }
    let statement = audience::sizes();
    let counts = join_all(
        db.all()
            .iter()
            .map(|shard| d1::rows::<Size>(shard, &statement)),
    )
    .await;
    let mut sizes = BTreeMap::new();
    for rows in counts {
        for s in rows? {
            *sizes.entry(s.segment).or_default() += s.size;
        }
    }
    Ok(sizes)
}

/// Records the day's sizes for the console's history.
pub async fn record_sizes(db: &Shards, now_ms: i64) -> worker::Result<()> {
    let sizes = sizes(db).await?;
    d1::execute(db, &[audience::record_sizes(now_ms, &sizes)]).await?;
    Ok(())
}

/// The page `page` (an [`audience::members`] or [`audience::export_page`] statement) reads in
/// each shard, merged: each shard's first `limit` after the cursor hold the first `limit` of
/// all.
pub async fn members(db: &Shards, page: &Statement, limit: usize) -> worker::Result<Vec<Member>> {
    let pages = join_all(db.all().iter().map(|shard| d1::rows::<Member>(shard, page))).await;
    let mut members = Vec::new();
    for rows in pages {
        members.extend(rows?);
    }
    members.sort_by(|a, b| a.profile_id.cmp(&b.profile_id));
    members.truncate(limit);
    Ok(members)
}
