//! Moving the profiles' state and the identity graph's links after the shard count changed
//! (`PROFILE_SHARDS_FROM` set to the old count, docs/scale.md "Profile shards"). Each run (the
//! every-minute cron) walks the old count's shards in key order from saved positions
//! (`walk_cursors`) and moves home every profile that now belongs in another shard
//! (`store::personalisation::settle`), then, with what the run's budget leaves, every
//! identifier whose links do (`store::identity::settle_links`), then every identifier whose
//! assignment does (`store::identity::settle_assignment`). A shard whose walk reached its
//! end with nothing left behind is marked done; once every walk is, the move is over and
//! `PROFILE_SHARDS_FROM` can go. Reads meanwhile look in both places, so nothing waits on this.
//! With no move under way, the same walks take home, once, the evidence and the links `DB`
//! held for other shards' profiles and identifiers ([`EVIDENCE_HOME`], [`LINKS_HOME`],
//! [`ASSIGNMENTS_HOME`] and, for what an older Worker wrote behind them during the deploy,
//! [`LINKS_HOME_AGAIN`] and [`ASSIGNMENTS_HOME_AGAIN`]), and the archive's index by person,
//! a page at a time (`store::archive_index::settle`; [`INDEX_HOME`], [`INDEX_HOME_AGAIN`]).

use seam_core::archive::spread::{self as archive_spread, home_key, INDEX_HOME, INDEX_HOME_AGAIN};
use seam_core::identity::spread::{
    self, ASSIGNMENTS_HOME, ASSIGNMENTS_HOME_AGAIN, LINKS_HOME, LINKS_HOME_AGAIN,
};
use seam_core::personalise::shard::{self, Layout};
use seam_core::plan::{Param, Statement};
use seam_core::privacy::retention::save_walk_cursor;
use serde::Deserialize;

use crate::error::ApiError;
use crate::store::retention::{save_walk, walk_start};
use crate::store::shards::Shards;
use crate::store::{archive_index, d1, identity, personalisation};

/// Steps one run takes at most, over all shards: a step is a page read and its saved position,
/// and reading a shard's saved positions counts as one.
const STEPS_PER_RUN: u32 = 30;

/// How much one run may do. The defaults keep a run under 500 D1 queries: a move is five or
/// six (its evidence included), an invocation makes at most 1,000, and the journeys' run shares this one. Smaller
/// budgets (`PROFILE_MOVE_STEP`, `PROFILE_MOVES_PER_RUN`) make a test's walk span runs.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Profiles one step of a shard's walk reads.
    pub step: u32,
    /// Profiles one run moves at most.
    pub moves: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            step: 200,
            moves: 60,
        }
    }
}

/// The saved position of a shard whose walk is finished.
pub const DONE: &str = shard::WALK_DONE;
/// The prefix of the walks' names in `walk_cursors`.
const PREFIX: &str = "profile_shard_move:";

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
    format!("{PREFIX}{from}:{}:{shard}", layout.shards)
}

/// The prefix of the link walks' names: a move's walks of identifiers, beside its profiles'.
const LINK_PREFIX: &str = "identity_link_move:";

/// The link walk's name for `shard` in `walk_cursors`, as [`cursor_name`].
pub fn link_cursor_name(layout: Layout, shard: usize) -> String {
    let from = layout.from.unwrap_or(layout.shards);
    format!("{LINK_PREFIX}{from}:{}:{shard}", layout.shards)
}

/// The prefix of the assignment walks' names, as [`LINK_PREFIX`].
const ASSIGNMENT_PREFIX: &str = "identity_assignment_move:";

/// The assignment walk's name for `shard` in `walk_cursors`, as [`cursor_name`].
pub fn assignment_cursor_name(layout: Layout, shard: usize) -> String {
    let from = layout.from.unwrap_or(layout.shards);
    format!("{ASSIGNMENT_PREFIX}{from}:{}:{shard}", layout.shards)
}

/// The prefix of the archive index walks' names, as [`LINK_PREFIX`].
const INDEX_PREFIX: &str = "archive_index_move:";

/// The archive index walk's name for `shard` in `walk_cursors`, as [`cursor_name`].
pub fn index_cursor_name(layout: Layout, shard: usize) -> String {
    let from = layout.from.unwrap_or(layout.shards);
    format!("{INDEX_PREFIX}{from}:{}:{shard}", layout.shards)
}

/// The walk over `DB` that takes other shards' profiles' evidence home, once: evidence stayed
/// in `DB` before it moved to the profile shards (2026-12-07), so a deployment that already had
/// shards walks it once. Not a move's walk, so it is never forgotten.
pub const EVIDENCE_HOME: &str = "profile_evidence_home:0";

/// One run of the move. When the count is not changing, it forgets the walks of a past move
/// (so that a later move with the same counts walks again) and, with shards, takes the
/// evidence `DB` still holds for other shards' profiles home ([`EVIDENCE_HOME`]).
pub async fn run(db: &Shards, budget: Budget, now_ms: i64) -> Result<Report, ApiError> {
    let mut report = Report::default();
    let mut spend = Spend {
        moves: budget.moves,
        steps: STEPS_PER_RUN,
        step: budget.step,
    };
    let Some(from) = db.layout().from else {
        forget_walks(db).await?;
        if db.all().len() > 1 {
            let elsewhere = |key: &str, _: usize| db.index_of(key) != 0;
            let walks = [(0, EVIDENCE_HOME.to_owned())];
            walk(
                db,
                &walks,
                Kind::Profiles,
                elsewhere,
                &mut spend,
                &mut report,
            )
            .await?;
            // The links' walk twice, the second from a later run than the first ended in.
            let first_done = walk_start(db, LINKS_HOME).await? == DONE;
            let walks = [(0, LINKS_HOME.to_owned())];
            walk(db, &walks, Kind::Links, elsewhere, &mut spend, &mut report).await?;
            if first_done {
                let walks = [(0, LINKS_HOME_AGAIN.to_owned())];
                walk(db, &walks, Kind::Links, elsewhere, &mut spend, &mut report).await?;
            }
            // The assignments' walk likewise (they moved later: migration 0031).
            let first_done = walk_start(db, ASSIGNMENTS_HOME).await? == DONE;
            let walks = [(0, ASSIGNMENTS_HOME.to_owned())];
            let kind = Kind::Assignments;
            walk(db, &walks, kind, elsewhere, &mut spend, &mut report).await?;
            if first_done {
                let walks = [(0, ASSIGNMENTS_HOME_AGAIN.to_owned())];
                walk(db, &walks, kind, elsewhere, &mut spend, &mut report).await?;
            }
            // The archive's index likewise (it moved later still: the shards' 0005).
            let elsewhere = |person: i64, _: usize| !archive_index::in_db(db, person);
            let first_done = walk_start(db, INDEX_HOME).await? == DONE;
            let walks = [(0, INDEX_HOME.to_owned())];
            walk_index(db, &walks, elsewhere, &mut spend, &mut report).await?;
            if first_done {
                let walks = [(0, INDEX_HOME_AGAIN.to_owned())];
                walk_index(db, &walks, elsewhere, &mut spend, &mut report).await?;
            }
        }
        return Ok(report);
    };
    // Only the old count's shards hold rows it placed. Each run starts at the next of them, so
    // one shard whose profile keeps failing does not take every run's budget.
    let count = (from as usize).min(db.all().len());
    let first = now_ms.div_euclid(60_000).rem_euclid(count.max(1) as i64) as usize;
    let order: Vec<usize> = (0..count).map(|i| (first + i) % count).collect();
    let elsewhere = |key: &str, index: usize| db.previous(key) == Some(index);
    let walks: Vec<(usize, String)> = order
        .iter()
        .map(|&index| (index, cursor_name(db.layout(), index)))
        .collect();
    walk(
        db,
        &walks,
        Kind::Profiles,
        elsewhere,
        &mut spend,
        &mut report,
    )
    .await?;
    let walks: Vec<(usize, String)> = order
        .iter()
        .map(|&index| (index, link_cursor_name(db.layout(), index)))
        .collect();
    walk(db, &walks, Kind::Links, elsewhere, &mut spend, &mut report).await?;
    let walks: Vec<(usize, String)> = order
        .iter()
        .map(|&index| (index, assignment_cursor_name(db.layout(), index)))
        .collect();
    let kind = Kind::Assignments;
    walk(db, &walks, kind, elsewhere, &mut spend, &mut report).await?;
    let walks: Vec<(usize, String)> = order
        .iter()
        .map(|&index| (index, index_cursor_name(db.layout(), index)))
        .collect();
    let elsewhere = |person: i64, index: usize| db.previous(&home_key(person)) == Some(index);
    walk_index(db, &walks, elsewhere, &mut spend, &mut report).await?;
    Ok(report)
}

/// Walks each `(shard, walk name)` of the archive's index a page at a time, within what is
/// left to `spend` (a page moved counts as one move), taking home the entries whose rows there
/// belong elsewhere (`elsewhere(person, shard)`). An entry a recent tombstone kept from its
/// home (its erasure is under way, `archive::spread::copy`) stays where it was, and the pass
/// goes round again from a later run instead of ending: readers stop reading there once it
/// ends.
async fn walk_index(
    db: &Shards,
    walks: &[(usize, String)],
    elsewhere: impl Fn(i64, usize) -> bool,
    spend: &mut Spend,
    report: &mut Report,
) -> Result<(), ApiError> {
    for (index, name) in walks {
        let index = *index;
        if spend.steps == 0 || spend.moves == 0 {
            break;
        }
        report.shards += 1;
        let left_name = format!("{name}:left");
        let mut after = walk_start(db, name).await?;
        spend.steps -= 1;
        let mut left_behind = after != DONE && !walk_start(db, &left_name).await?.is_empty();
        while after != DONE && spend.moves > 0 && spend.steps > 0 {
            spend.steps -= 1;
            let page = archive_spread::walk(&after, spend.step);
            let rows = d1::rows::<archive_spread::WalkedEntry>(db.at(index), &page).await?;
            let away: Vec<(i64, i64)> = rows
                .iter()
                .filter_map(|r| Some((r.key()?, r.object)))
                .filter(|&(person, _)| elsewhere(person, index))
                .collect();
            let was_left = left_behind;
            if !away.is_empty() {
                spend.moves -= 1;
                let now_ms = crate::platform::now_ms();
                match archive_index::settle(db, index, &away, now_ms).await {
                    Ok(moved) => {
                        report.moved += moved;
                        left_behind |= moved < away.len();
                    }
                    Err(e) => {
                        worker::console_error!("moving archive index entries failed: {e}");
                        left_behind = true;
                    }
                }
            }
            report.walked += rows.len();
            if left_behind && !was_left {
                save_walk(db, &left_name, "1").await?;
            }
            let finished = rows.len() < spend.step as usize;
            if finished && left_behind {
                // Both positions in one batch, as in `walk`.
                let restart = [save_walk_cursor(name, ""), save_walk_cursor(&left_name, "")];
                d1::execute(db, &restart).await?;
                break;
            }
            after = match rows.last() {
                Some(last) if !finished => last.cursor(),
                _ => DONE.to_owned(),
            };
            save_walk(db, name, &after).await?;
        }
        if after == DONE {
            report.done += 1;
        }
    }
    Ok(())
}

/// What the walks of one run may still spend.
struct Spend {
    moves: usize,
    steps: u32,
    step: u32,
}

/// What a walk visits: profiles (their state, memberships and evidence) or identifiers (their
/// links, `identity::spread`, or their assignments).
#[derive(Clone, Copy)]
enum Kind {
    Profiles,
    Links,
    Assignments,
}

impl Kind {
    fn page(self, after: &str, step: u32) -> Statement {
        match self {
            Kind::Profiles => shard::walk(after, step),
            Kind::Links => spread::walk(after, step),
            Kind::Assignments => spread::walk_assignments(after, step),
        }
    }

    async fn settle(self, db: &Shards, key: &str, index: usize) -> worker::Result<bool> {
        match self {
            Kind::Profiles => personalisation::settle_from(db, key, index).await,
            Kind::Links => identity::settle_links(db, key, index).await,
            Kind::Assignments => {
                let now_ms = crate::platform::now_ms();
                identity::settle_assignment(db, key, index, now_ms).await
            }
        }
    }
}

/// Walks each `(shard, walk name)` in turn from its saved position, within what is left to
/// `spend`, moving home every profile or identifier (`kind`) whose rows there belong elsewhere
/// (`elsewhere(key, shard)`).
async fn walk(
    db: &Shards,
    walks: &[(usize, String)],
    kind: Kind,
    elsewhere: impl Fn(&str, usize) -> bool,
    spend: &mut Spend,
    report: &mut Report,
) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(alias = "profile_id")]
        key: String,
    }
    let spend_step = spend.step;
    let (moves, steps) = (&mut spend.moves, &mut spend.steps);
    for (index, name) in walks {
        let index = *index;
        if *steps == 0 || *moves == 0 {
            break;
        }
        report.shards += 1;
        // A profile that could not move makes this pass go round again instead of ending:
        // remembered under its own name, since a pass can span runs.
        let left_name = format!("{name}:left");
        let mut after = walk_start(db, name).await?;
        *steps -= 1;
        let mut left_behind = after != DONE && !walk_start(db, &left_name).await?.is_empty();
        while after != DONE && *moves > 0 && *steps > 0 {
            *steps -= 1;
            let rows = d1::rows::<Row>(db.at(index), &kind.page(&after, spend_step)).await?;
            let mut read_all = true;
            let was_left = left_behind;
            for row in &rows {
                if elsewhere(&row.key, index) {
                    if *moves == 0 {
                        read_all = false;
                        break;
                    }
                    *moves -= 1;
                    match kind.settle(db, &row.key, index).await {
                        Ok(true) => report.moved += 1,
                        Ok(false) => left_behind = true,
                        Err(e) => {
                            worker::console_error!("moving to another shard failed: {e}");
                            left_behind = true;
                        }
                    }
                }
                report.walked += 1;
                after.clone_from(&row.key);
            }
            let finished = read_all && rows.len() < spend_step as usize;
            if left_behind && !was_left {
                save_walk(db, &left_name, "1").await?;
            }
            if finished && left_behind {
                // Round again from the start, in a later run: a profile that keeps failing
                // must not hold the other shards' walks. Both positions in one batch: a
                // cleared flag with the old position would let the pass end done.
                let restart = [save_walk_cursor(name, ""), save_walk_cursor(&left_name, "")];
                d1::execute(db, &restart).await?;
                after = String::new();
                break;
            }
            if finished {
                after = DONE.to_owned();
            }
            save_walk(db, name, &after).await?;
        }
        if after == DONE {
            report.done += 1;
        }
    }
    Ok(())
}

/// Deletes the saved positions of past moves (one read when there are none).
async fn forget_walks(db: &Shards) -> Result<(), ApiError> {
    let prefixes = [PREFIX, LINK_PREFIX, ASSIGNMENT_PREFIX, INDEX_PREFIX]
        .map(|p| Param::Text(format!("{p}%")));
    let of_moves = "name LIKE ?1 OR name LIKE ?2 OR name LIKE ?3 OR name LIKE ?4";
    let any = Statement {
        sql: format!("SELECT name FROM walk_cursors WHERE {of_moves} LIMIT 1"),
        params: prefixes.to_vec(),
    };
    if !d1::rows::<serde_json::Value>(db, &any).await?.is_empty() {
        let forget = Statement {
            sql: format!("DELETE FROM walk_cursors WHERE {of_moves}"),
            params: prefixes.to_vec(),
        };
        d1::execute(db, &[forget]).await?;
    }
    Ok(())
}
