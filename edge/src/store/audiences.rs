//! Segments as audiences over the profile shards: each shard counts and lists its own members
//! (`core::personalise::segment::audience`); sizes add up and pages merge by profile ID.

use std::collections::{BTreeMap, VecDeque};

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

/// The page `page` (an [`audience::members`] statement) reads in each shard, merged: each
/// shard's first `limit` after the cursor hold the first `limit` of all. For a page of at most
/// [`audience::MAX_PAGE`]; a whole audience goes through [`Members`].
pub async fn members(db: &Shards, page: &Statement, limit: usize) -> worker::Result<Vec<Member>> {
    let pages = join_all(db.all().iter().map(|shard| d1::rows::<Member>(shard, page))).await;
    let mut members = Vec::new();
    for rows in pages {
        members.extend(rows?);
    }
    members.sort_by(|a, b| a.profile_id.cmp(&b.profile_id));
    // While the shard count changes, a profile mid-move can be in two shards.
    members.dedup_by(|a, b| a.profile_id == b.profile_id);
    members.truncate(limit);
    Ok(members)
}

/// A whole audience in profile order, merged from the shards as it is read: each shard is read
/// a page ([`audience::EXPORT_PAGE`]) at a time, only when its previous page is used up, so an
/// export holds at most a page per shard and makes about one query per page of members.
pub struct Members {
    segment: String,
    shards: Vec<Reading>,
    /// The last member given: while the shard count changes, a profile caught between the
    /// copy and the delete of a move is in two shards at once, and is given once.
    last: Option<String>,
}

#[derive(Default)]
struct Reading {
    unread: VecDeque<Member>,
    after: String,
    done: bool,
}

impl Members {
    /// The audience of `segment` in `db`'s shards, from the start.
    pub fn of(db: &Shards, segment: &str) -> Self {
        Members {
            segment: segment.to_owned(),
            shards: db.all().iter().map(|_| Reading::default()).collect(),
            last: None,
        }
    }

    /// The next members, up to `max`, in profile order; empty once all are read.
    pub async fn next(&mut self, db: &Shards, max: usize) -> worker::Result<Vec<Member>> {
        let mut out = Vec::new();
        while out.len() < max {
            for (shard, reading) in self.shards.iter_mut().enumerate() {
                if reading.unread.is_empty() && !reading.done {
                    let page = audience::export_page(&self.segment, &reading.after);
                    let rows = d1::rows::<Member>(db.at(shard), &page).await?;
                    reading.done = rows.len() < audience::EXPORT_PAGE as usize;
                    if let Some(last) = rows.last() {
                        reading.after.clone_from(&last.profile_id);
                    }
                    reading.unread.extend(rows);
                }
            }
            let next = self
                .shards
                .iter_mut()
                .filter(|r| !r.unread.is_empty())
                .min_by(|a, b| a.unread[0].profile_id.cmp(&b.unread[0].profile_id));
            match next.and_then(|r| r.unread.pop_front()) {
                Some(member) if self.last.as_ref() == Some(&member.profile_id) => {}
                Some(member) => {
                    self.last = Some(member.profile_id.clone());
                    out.push(member);
                }
                None => break,
            }
        }
        Ok(out)
    }
}
