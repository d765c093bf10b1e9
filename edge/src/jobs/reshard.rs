//! Moving the profiles' state after the shard count changed (`PROFILE_SHARDS_FROM` set to the
//! old count, docs/scale.md "Profile shards"). Each run (the every-minute cron) walks the
//! shards' state rows in key order from saved positions (`walk_cursors`) and moves home every
//! row whose profile now belongs in another shard (`store::personalisation::settle`), up to
//! [`MOVES_PER_RUN`] a run. A shard
//! whose walk reached its end is marked done; once every shard is, the move is over and
//! `PROFILE_SHARDS_FROM` can go. Reads meanwhile look in both places, so nothing waits on this.

use seam_core::personalise::shard::{self, Layout};
use serde::Deserialize;

use crate::error::ApiError;
use crate::store::retention::{save_walk, walk_start};
use crate::store::shards::Shards;
use crate::store::{d1, personalisation};

/// State rows one step of a shard's walk reads.
const STEP: u32 = 200;
/// Profiles one run moves at most: a move is five D1 queries (three reads, two batches), and
/// an invocation makes at most 1,000.
const MOVES_PER_RUN: usize = 100;
/// The saved position of a shard whose walk is finished.
pub const DONE: &str = "\u{10FFFF}done";

/// What one run did.
#[derive(Debug, Default)]
pub struct Report {
    /// State rows read.
    pub walked: usize,
    /// Profiles moved home.
    pub moved: usize,
    /// Shards whose walk is finished.
    pub done: usize,
    /// Shards walked.
    pub shards: usize,
}

/// The walk's name for `shard` in `walk_cursors`: one per move (from one count to another),
/// so a later change of the count walks again.
pub fn cursor_name(layout: Layout, shard: usize) -> String {
    let from = layout.from.unwrap_or(layout.shards);
    format!("profile_shard_move:{from}:{}:{shard}", layout.shards)
}

/// One run of the move; nothing when the count is not changing.
pub async fn run(db: &Shards) -> Result<Report, ApiError> {
    let mut report = Report::default();
    if !db.moving() {
        return Ok(report);
    }
    #[derive(Deserialize)]
    struct Row {
        profile_id: String,
    }
    let mut budget = MOVES_PER_RUN;
    for index in 0..db.all().len() {
        report.shards += 1;
        let name = cursor_name(db.layout(), index);
        let mut after = walk_start(db, &name).await?;
        while after != DONE && budget > 0 {
            let rows = d1::rows::<Row>(db.at(index), &shard::walk(&after, STEP)).await?;
            let mut read_all = true;
            for row in &rows {
                // Only what the old count put here moves; a row no layout explains stays.
                if db.previous(&row.profile_id) == Some(index) {
                    if budget == 0 {
                        read_all = false;
                        break;
                    }
                    personalisation::settle(db, &row.profile_id).await?;
                    budget -= 1;
                    report.moved += 1;
                }
                report.walked += 1;
                after.clone_from(&row.profile_id);
            }
            if read_all && rows.len() < STEP as usize {
                after = DONE.to_owned();
            }
            save_walk(db, &name, &after).await?;
        }
        if after == DONE {
            report.done += 1;
        }
    }
    Ok(report)
}
