//! The shared inputs of recommendations (co-occurrence lists, category listings, catalogue items,
//! the popular list) and their reuse between decisions. They are the same for every visitor, so
//! an isolate keeps each one briefly and a decision reads from D1 only what it lacks: a warm
//! isolate decides with no D1 read at all. Entries are per product and per category, so
//! visitors with different histories still share most of them.
//!
//! Freshness: an entry lives at most `ttl_ms`; the writes an isolate makes itself drop what they
//! change at once ([`CandidateCache::forget`] with [`Changed`]). Pure: the caller passes the
//! clock, runs the reads and hands back their rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use serde::Deserialize;

use crate::personalise::recommend::{Candidates, CatalogItem, Changed, ItemStat, PairRow, Signals};
use crate::plan::{Param, Statement};

/// Partners kept per product (strongest first).
pub const PAIRS_PER_ITEM: usize = 50;
/// Items kept per category listing (newest first).
pub const ITEMS_PER_CATEGORY: usize = 100;

/// The strongest partners of each product, with the partner's catalogue body.
/// Bind `?1` = JSON array of product IDs, `?2` = partners per product.
pub const LOAD_PAIRS_SQL: &str = "SELECT item_a, item_b, co_views, co_purchases, body FROM (\
    SELECT p.item_a, p.item_b, p.co_views, p.co_purchases, c.body, row_number() OVER (\
    PARTITION BY p.item_a ORDER BY p.co_purchases * 3 + p.co_views DESC, p.item_b) AS n \
    FROM item_pairs p LEFT JOIN catalog_items c ON c.product_id = p.item_b \
    WHERE p.item_a IN (SELECT value FROM json_each(?1))) WHERE n <= ?2";

/// The most popular items with their catalogue bodies. Bind `?1` = how many.
pub const LOAD_POPULAR_SQL: &str = "SELECT s.product_id, s.views, s.purchases, c.body \
    FROM item_stats s LEFT JOIN catalog_items c ON c.product_id = s.product_id \
    ORDER BY s.purchases * 3 + s.views DESC, s.product_id LIMIT ?1";

/// The newest catalogue items of each category. Bind `?1` = JSON array of categories,
/// `?2` = items per category.
pub const LOAD_CATEGORY_ITEMS_SQL: &str = "SELECT category, body FROM (\
    SELECT category, body, row_number() OVER (\
    PARTITION BY category ORDER BY updated_at DESC, product_id) AS n FROM catalog_items \
    WHERE category IN (SELECT value FROM json_each(?1))) WHERE n <= ?2";

/// Catalogue items by ID. Bind `?1` = JSON array of product IDs.
pub const LOAD_ITEMS_SQL: &str = "SELECT product_id, body FROM catalog_items \
    WHERE product_id IN (SELECT value FROM json_each(?1))";

/// [`LOAD_PAIRS_SQL`] in a profile shard other than `DB`: that shard's counts only (the
/// catalogue is in `DB`). Bind as [`LOAD_PAIRS_SQL`].
pub const LOAD_SHARD_PAIRS_SQL: &str = "SELECT item_a, item_b, co_views, co_purchases FROM (\
    SELECT item_a, item_b, co_views, co_purchases, row_number() OVER (\
    PARTITION BY item_a ORDER BY co_purchases * 3 + co_views DESC, item_b) AS n \
    FROM item_pairs WHERE item_a IN (SELECT value FROM json_each(?1))) WHERE n <= ?2";

/// [`LOAD_POPULAR_SQL`] in a profile shard other than `DB`. Bind as [`LOAD_POPULAR_SQL`].
pub const LOAD_SHARD_POPULAR_SQL: &str = "SELECT product_id, views, purchases FROM item_stats \
    ORDER BY purchases * 3 + views DESC, product_id LIMIT ?1";

/// One row of any of the reads above (columns a read does not select stay `None`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CandidateRow {
    /// Pairs: the product asked about.
    pub item_a: Option<String>,
    /// Pairs: its partner.
    pub item_b: Option<String>,
    /// Pairs: distinct profiles that viewed both.
    pub co_views: Option<i64>,
    /// Pairs: distinct profiles that bought both.
    pub co_purchases: Option<i64>,
    /// Popular items and items by ID.
    pub product_id: Option<String>,
    /// Popular: distinct viewers.
    pub views: Option<i64>,
    /// Popular: distinct buyers.
    pub purchases: Option<i64>,
    /// Category listings: the category.
    pub category: Option<String>,
    /// The catalogue body (JSON text) of the row's item, when catalogued.
    pub body: Option<String>,
}

impl CandidateRow {
    fn item(&self) -> Option<CatalogItem> {
        self.body.as_deref().and_then(CatalogItem::from_json_str)
    }

    fn pair(&self) -> Option<PairRow> {
        Some(PairRow {
            item_a: self.item_a.clone()?,
            item_b: self.item_b.clone()?,
            co_views: self.co_views.unwrap_or(0),
            co_purchases: self.co_purchases.unwrap_or(0),
        })
    }

    fn stat(&self) -> Option<ItemStat> {
        Some(ItemStat {
            product_id: self.product_id.clone()?,
            views: self.views.unwrap_or(0),
            purchases: self.purchases.unwrap_or(0),
        })
    }
}

type Partners = Rc<Vec<(PairRow, Option<CatalogItem>)>>;
type Listing = Rc<Vec<CatalogItem>>;
type Popular = Rc<Vec<(ItemStat, Option<CatalogItem>)>>;

#[derive(Debug, Clone)]
struct Entry<T> {
    at_ms: i64,
    value: T,
    /// Its estimated size (see [`weigh_item`]).
    bytes: usize,
}

/// Bytes kept per kind of entry by default: an isolate has 128 MB for everything, and listings
/// carry up to 100 catalogue bodies each, so a count of entries alone bounds nothing.
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;
/// What an entry costs beyond its strings (map slot, `Rc`, `Vec` and struct headers), roughly.
const ENTRY_OVERHEAD: usize = 96;

/// A catalogue item's estimated size in memory.
fn weigh_item(item: &CatalogItem) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    ENTRY_OVERHEAD
        + item.product_id.len()
        + text(&item.name)
        + text(&item.category)
        + text(&item.brand)
        + text(&item.currency)
        + text(&item.url)
        + text(&item.image_url)
}

fn weigh_partners(list: &Partners) -> usize {
    list.iter()
        .map(|(pair, item)| {
            ENTRY_OVERHEAD
                + pair.item_a.len()
                + pair.item_b.len()
                + item.as_ref().map_or(0, weigh_item)
        })
        .sum()
}

fn weigh_listing(list: &Listing) -> usize {
    list.iter().map(weigh_item).sum()
}

fn weigh_found(item: &Option<CatalogItem>) -> usize {
    item.as_ref().map_or(0, weigh_item)
}

/// Entries of one kind, with their total estimated size.
#[derive(Debug, Clone)]
struct Kept<T> {
    entries: HashMap<String, Entry<T>>,
    bytes: usize,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
        }
    }
}

impl<T> Kept<T> {
    fn get(&self, key: &str) -> Option<&Entry<T>> {
        self.entries.get(key)
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.bytes;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Keeps `value` under `key` unless caching is off or it could never fit. A full kind
    /// (entries or bytes) drops expired entries first and starts over if still full (simpler
    /// than LRU; a full cache of live entries means the working set outgrew it anyway).
    fn keep(&mut self, limits: Limits, key: String, value: T, weight: usize, now_ms: i64) {
        let bytes = weight + key.len() + ENTRY_OVERHEAD;
        if limits.ttl_ms <= 0 || bytes > limits.max_bytes {
            return;
        }
        self.remove(&key);
        let full =
            |k: &Self| k.entries.len() >= limits.capacity || k.bytes + bytes > limits.max_bytes;
        if full(self) {
            self.entries
                .retain(|_, e| now_ms.saturating_sub(e.at_ms) < limits.ttl_ms);
            self.bytes = self.entries.values().map(|e| e.bytes).sum();
            if full(self) {
                self.clear();
            }
        }
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                at_ms: now_ms,
                value,
                bytes,
            },
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    ttl_ms: i64,
    capacity: usize,
    max_bytes: usize,
}

/// One read a decision still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Pairs(Vec<String>),
    Popular,
    Categories(Vec<String>),
    Items(Vec<String>),
}

/// What a decision found in the cache and the reads it still needs (see
/// [`CandidateCache::plan`]). Holds its hits, so writes to the cache while the reads are in
/// flight do not change this decision.
#[derive(Debug, Clone)]
pub struct CandidatePlan {
    reads: Vec<Read>,
    popular_limit: usize,
    pairs: Vec<Partners>,
    categories: Vec<Listing>,
    items: Vec<CatalogItem>,
    popular: Option<Popular>,
}

impl CandidatePlan {
    /// How many reads [`CandidatePlan::statements`] holds, without building them.
    pub fn read_count(&self) -> usize {
        self.reads.len()
    }

    /// The D1 reads to run, in order (empty when the cache had everything).
    pub fn statements(&self) -> Vec<Statement> {
        let list = |ids: &[String]| {
            Param::Text(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
        };
        let count = |n: usize| Param::Int(i64::try_from(n).unwrap_or(i64::MAX));
        self.reads
            .iter()
            .map(|read| match read {
                Read::Pairs(ids) => Statement {
                    sql: LOAD_PAIRS_SQL.into(),
                    params: vec![list(ids), count(PAIRS_PER_ITEM)],
                },
                Read::Popular => Statement {
                    sql: LOAD_POPULAR_SQL.into(),
                    params: vec![count(self.popular_limit)],
                },
                Read::Categories(names) => Statement {
                    sql: LOAD_CATEGORY_ITEMS_SQL.into(),
                    params: vec![list(names), count(ITEMS_PER_CATEGORY)],
                },
                Read::Items(ids) => Statement {
                    sql: LOAD_ITEMS_SQL.into(),
                    params: vec![list(ids)],
                },
            })
            .collect()
    }
}

impl CandidatePlan {
    /// With profile shards, each other shard counts its own profiles' evidence: the reads to
    /// run in each of them, as `(index of the read in [`CandidatePlan::statements`] they add
    /// to, statement)`. Empty when the plan reads no counts.
    pub fn shard_statements(&self) -> Vec<(usize, Statement)> {
        self.statements()
            .into_iter()
            .enumerate()
            .filter_map(|(i, mut read)| {
                read.sql = match self.reads[i] {
                    Read::Pairs(_) => LOAD_SHARD_PAIRS_SQL.into(),
                    Read::Popular => LOAD_SHARD_POPULAR_SQL.into(),
                    Read::Categories(_) | Read::Items(_) => return None,
                };
                Some((i, read))
            })
            .collect()
    }

    /// Adds the other shards' answers to [`CandidatePlan::shard_statements`] (`shards`: per
    /// shard, one list per statement, in order) into `rows` (`DB`'s answers to
    /// [`CandidatePlan::statements`]): counts of one pair or product summed, then ranked and
    /// cut as one read would. Each shard sends its strongest partners only, so a partner
    /// outside every shard's cut is missed where one database holding every count might have
    /// kept it (a weak partner: every shard's ranking samples the same shoppers).
    /// Returns the read of the catalogue bodies still missing (products that `DB`'s own
    /// counts did not name), whose rows go to [`CandidatePlan::add_bodies`].
    pub fn add_shards(
        &self,
        rows: &mut Vec<Vec<CandidateRow>>,
        shards: &[Vec<Vec<CandidateRow>>],
    ) -> Option<Statement> {
        let statements = self.shard_statements();
        if statements.is_empty() || shards.is_empty() {
            return None;
        }
        rows.resize_with(self.reads.len(), Vec::new);
        let mut missing: Vec<String> = Vec::new();
        let id = |row: &CandidateRow| row.item_b.clone().or_else(|| row.product_id.clone());
        for (k, (i, _)) in statements.iter().enumerate() {
            let theirs = shards.iter().filter_map(|shard| shard.get(k)).flatten();
            let merged = match self.reads[*i] {
                Read::Pairs(_) => sum_pairs(&rows[*i], theirs),
                _ => sum_stats(&rows[*i], theirs, self.popular_limit),
            };
            // `DB`'s own rows came with the catalogue: one without a body is not catalogued.
            let asked: BTreeSet<String> = rows[*i].iter().filter_map(id).collect();
            for row in merged.iter().filter(|r| r.body.is_none()) {
                if let Some(id) = id(row).filter(|id| !asked.contains(id) && !missing.contains(id))
                {
                    missing.push(id);
                }
            }
            rows[*i] = merged;
        }
        (!missing.is_empty()).then(|| Statement {
            sql: LOAD_ITEMS_SQL.into(),
            params: vec![Param::Text(
                serde_json::to_string(&missing).unwrap_or_else(|_| "[]".into()),
            )],
        })
    }

    /// Gives the rows [`CandidatePlan::add_shards`] left without a catalogue body the bodies
    /// its read found (`bodies`: rows of [`LOAD_ITEMS_SQL`]).
    pub fn add_bodies(rows: &mut [Vec<CandidateRow>], bodies: &[CandidateRow]) {
        let found: HashMap<&str, &str> = bodies
            .iter()
            .filter_map(|b| Some((b.product_id.as_deref()?, b.body.as_deref()?)))
            .collect();
        for row in rows.iter_mut().flatten().filter(|r| r.body.is_none()) {
            let id = row.item_b.as_deref().or(row.product_id.as_deref());
            if let Some(body) = id.and_then(|id| found.get(id)) {
                row.body = Some((*body).to_owned());
            }
        }
    }
}

/// Rows of several databases keyed by `key`, their counts added up (a count none of them has
/// stays `None`). The first row of a key gives the rest of its fields: `ours` (`DB`'s rows, with
/// the catalogue bodies) go first.
fn sum_by<'a, K: Ord>(
    rows: impl Iterator<Item = &'a CandidateRow>,
    key: impl Fn(&CandidateRow) -> Option<K>,
) -> BTreeMap<K, CandidateRow> {
    let plus = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    let mut sums: BTreeMap<K, CandidateRow> = BTreeMap::new();
    for row in rows {
        let Some(k) = key(row) else { continue };
        match sums.get_mut(&k) {
            None => {
                sums.insert(k, row.clone());
            }
            Some(sum) => {
                sum.co_views = plus(sum.co_views, row.co_views);
                sum.co_purchases = plus(sum.co_purchases, row.co_purchases);
                sum.views = plus(sum.views, row.views);
                sum.purchases = plus(sum.purchases, row.purchases);
            }
        }
    }
    sums
}

/// Pair rows of several databases as one read: counts summed per pair, each product's partners
/// ranked as [`LOAD_PAIRS_SQL`] ranks them and cut at [`PAIRS_PER_ITEM`]. Bodies come from
/// `ours` (`DB`'s rows).
fn sum_pairs<'a>(
    ours: &'a [CandidateRow],
    theirs: impl Iterator<Item = &'a CandidateRow>,
) -> Vec<CandidateRow> {
    let pairs = sum_by(ours.iter().chain(theirs), |r| {
        Some((r.item_a.clone()?, r.item_b.clone()?))
    });
    let score = |r: &CandidateRow| r.co_purchases.unwrap_or(0) * 3 + r.co_views.unwrap_or(0);
    let mut by_item: BTreeMap<String, Vec<CandidateRow>> = BTreeMap::new();
    for ((a, _), row) in pairs {
        by_item.entry(a).or_default().push(row);
    }
    by_item
        .into_values()
        .flat_map(|mut partners| {
            partners.sort_by(|x, y| score(y).cmp(&score(x)).then(x.item_b.cmp(&y.item_b)));
            partners.truncate(PAIRS_PER_ITEM);
            partners
        })
        .collect()
}

/// Popular rows of several databases as one read: counts summed per product, ranked as
/// [`LOAD_POPULAR_SQL`] ranks them and cut at `limit`.
fn sum_stats<'a>(
    ours: &'a [CandidateRow],
    theirs: impl Iterator<Item = &'a CandidateRow>,
    limit: usize,
) -> Vec<CandidateRow> {
    let score = |r: &CandidateRow| r.purchases.unwrap_or(0) * 3 + r.views.unwrap_or(0);
    let mut all: Vec<CandidateRow> = sum_by(ours.iter().chain(theirs), |r| r.product_id.clone())
        .into_values()
        .collect();
    all.sort_by(|x, y| {
        score(y)
            .cmp(&score(x))
            .then(x.product_id.cmp(&y.product_id))
    });
    all.truncate(limit);
    all
}

/// The candidates of one decision, owned (see [`CandidateSet::candidates`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CandidateSet {
    /// Co-occurrence rows of the viewed items.
    pub pairs: Vec<PairRow>,
    /// Popular items, most popular first.
    pub popular: Vec<ItemStat>,
    /// Every catalogue item the reads returned.
    pub catalog: BTreeMap<String, CatalogItem>,
}

impl CandidateSet {
    /// The borrowed form the recommender takes.
    pub fn candidates(&self) -> Candidates<'_> {
        Candidates {
            pairs: &self.pairs,
            popular: &self.popular,
            catalog: &self.catalog,
        }
    }

    fn add_item(&mut self, item: &CatalogItem) {
        if !self.catalog.contains_key(&item.product_id) {
            self.catalog.insert(item.product_id.clone(), item.clone());
        }
    }
}

/// Recommendation inputs kept per product and category for `ttl_ms` (an isolate holds one).
#[derive(Debug, Clone)]
pub struct CandidateCache {
    ttl_ms: i64,
    capacity: usize,
    max_bytes: usize,
    popular_limit: usize,
    pairs: Kept<Partners>,
    categories: Kept<Listing>,
    items: Kept<Option<CatalogItem>>,
    popular: Option<Entry<Popular>>,
}

impl CandidateCache {
    /// An empty cache: entries live `ttl_ms` (0 keeps nothing), at most `capacity` entries and
    /// [`DEFAULT_MAX_BYTES`] per kind; the popular list holds `popular_limit` items.
    pub fn new(ttl_ms: i64, capacity: usize, popular_limit: usize) -> Self {
        Self {
            ttl_ms,
            capacity,
            max_bytes: DEFAULT_MAX_BYTES,
            popular_limit,
            pairs: Kept::default(),
            categories: Kept::default(),
            items: Kept::default(),
            popular: None,
        }
    }

    /// The same cache with at most `max_bytes` (estimated) per kind.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The estimated bytes kept: partner lists, listings, items.
    pub fn bytes(&self) -> [usize; 3] {
        [self.pairs.bytes, self.categories.bytes, self.items.bytes]
    }

    /// What a decision over `signals` can take from the cache at `now_ms`, and the reads for
    /// the rest: partners of the viewed items, the popular list (when `popular`), listings of
    /// the profile's categories and the viewed items themselves.
    pub fn plan(&self, signals: &Signals<'_>, popular: bool, now_ms: i64) -> CandidatePlan {
        let fresh = |at_ms: i64| now_ms.saturating_sub(at_ms) < self.ttl_ms;
        let mut plan = CandidatePlan {
            reads: Vec::new(),
            popular_limit: self.popular_limit,
            pairs: Vec::new(),
            categories: Vec::new(),
            items: Vec::new(),
            popular: None,
        };
        let mut missing = Vec::new();
        for id in signals.viewed {
            match self.pairs.get(id).filter(|e| fresh(e.at_ms)) {
                Some(e) => plan.pairs.push(Rc::clone(&e.value)),
                None if !missing.contains(id) => missing.push(id.clone()),
                None => {}
            }
        }
        if !missing.is_empty() {
            plan.reads.push(Read::Pairs(missing));
        }
        if popular {
            match self.popular.as_ref().filter(|e| fresh(e.at_ms)) {
                Some(e) => plan.popular = Some(Rc::clone(&e.value)),
                None => plan.reads.push(Read::Popular),
            }
        }
        let mut missing = Vec::new();
        for name in signals.categories.keys() {
            match self.categories.get(name).filter(|e| fresh(e.at_ms)) {
                Some(e) => plan.categories.push(Rc::clone(&e.value)),
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            plan.reads.push(Read::Categories(missing));
        }
        let mut missing = Vec::new();
        for id in signals.viewed {
            match self.items.get(id).filter(|e| fresh(e.at_ms)) {
                Some(e) => plan.items.extend(e.value.clone()),
                None if !missing.contains(id) => missing.push(id.clone()),
                None => {}
            }
        }
        if !missing.is_empty() {
            plan.reads.push(Read::Items(missing));
        }
        plan
    }

    /// Keeps what `plan`'s reads returned (`rows`, one list per statement, in order; a missing
    /// list reads as empty) as of `now_ms` and returns the decision's candidates: the plan's
    /// hits plus the new rows.
    pub fn absorb(
        &mut self,
        plan: CandidatePlan,
        mut rows: Vec<Vec<CandidateRow>>,
        now_ms: i64,
    ) -> CandidateSet {
        rows.resize_with(plan.reads.len(), Vec::new);
        let limits = Limits {
            ttl_ms: self.ttl_ms,
            capacity: self.capacity,
            max_bytes: self.max_bytes,
        };
        let mut set = CandidateSet::default();
        for partners in &plan.pairs {
            for (pair, item) in partners.iter() {
                set.pairs.push(pair.clone());
                item.iter().for_each(|i| set.add_item(i));
            }
        }
        for listing in &plan.categories {
            listing.iter().for_each(|i| set.add_item(i));
        }
        plan.items.iter().for_each(|i| set.add_item(i));
        let mut popular = plan.popular;
        for (read, rows) in plan.reads.into_iter().zip(rows) {
            match read {
                Read::Pairs(ids) => {
                    let mut by_item: HashMap<String, Vec<(PairRow, Option<CatalogItem>)>> =
                        ids.into_iter().map(|id| (id, Vec::new())).collect();
                    for row in &rows {
                        let Some(pair) = row.pair() else { continue };
                        let item = row.item();
                        set.pairs.push(pair.clone());
                        item.iter().for_each(|i| set.add_item(i));
                        if let Some(list) = by_item.get_mut(&pair.item_a) {
                            list.push((pair, item));
                        }
                    }
                    for (id, list) in by_item {
                        let list = Rc::new(list);
                        let weight = weigh_partners(&list);
                        self.pairs.keep(limits, id, list, weight, now_ms);
                    }
                }
                Read::Popular => {
                    let list: Vec<(ItemStat, Option<CatalogItem>)> = rows
                        .iter()
                        .filter_map(|row| Some((row.stat()?, row.item())))
                        .collect();
                    let list = Rc::new(list);
                    if self.ttl_ms > 0 {
                        self.popular = Some(Entry {
                            at_ms: now_ms,
                            value: Rc::clone(&list),
                            // The popular list is one list of `popular_limit` items.
                            bytes: 0,
                        });
                    }
                    popular = Some(list);
                }
                Read::Categories(names) => {
                    let mut by_name: HashMap<String, Vec<CatalogItem>> =
                        names.into_iter().map(|n| (n, Vec::new())).collect();
                    for row in &rows {
                        let Some(item) = row.item() else { continue };
                        set.add_item(&item);
                        if let Some(list) = row.category.as_ref().and_then(|c| by_name.get_mut(c)) {
                            list.push(item);
                        }
                    }
                    for (name, list) in by_name {
                        let list = Rc::new(list);
                        let weight = weigh_listing(&list);
                        self.categories.keep(limits, name, list, weight, now_ms);
                    }
                }
                Read::Items(ids) => {
                    let mut found: HashMap<String, Option<CatalogItem>> =
                        ids.into_iter().map(|id| (id, None)).collect();
                    for row in &rows {
                        let Some(item) = row.item() else { continue };
                        set.add_item(&item);
                        let id = row.product_id.as_ref().unwrap_or(&item.product_id);
                        if let Some(slot) = found.get_mut(id) {
                            *slot = Some(item);
                        }
                    }
                    // Unknown items are kept too (as absent): asking again would find nothing.
                    for (id, item) in found {
                        let weight = weigh_found(&item);
                        self.items.keep(limits, id, item, weight, now_ms);
                    }
                }
            }
        }
        if let Some(list) = popular {
            for (stat, item) in list.iter() {
                set.popular.push(stat.clone());
                item.iter().for_each(|i| set.add_item(i));
            }
        }
        set
    }

    /// Changes how long entries live from now on (the configured `cacheSeconds`).
    pub fn set_ttl(&mut self, ttl_ms: i64) {
        self.ttl_ms = ttl_ms;
    }

    /// Drops what writes changed: partner lists and catalogue entries of `changed.products`
    /// (both sides of a pair are listed) and listings of `changed.categories`. The popular list
    /// stays until it expires: one more distinct viewer barely moves a ranking, and every
    /// decision reads it, so dropping it on each new view would send every decision to D1
    /// while shoppers browse.
    pub fn forget(&mut self, changed: &Changed) {
        for id in &changed.products {
            self.pairs.remove(id);
            self.items.remove(id);
        }
        for name in &changed.categories {
            self.categories.remove(name);
        }
    }

    /// Drops everything (a catalogue upload, an erasure, a merge).
    pub fn clear(&mut self) {
        self.pairs.clear();
        self.categories.clear();
        self.items.clear();
        self.popular = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const TTL: i64 = 10_000;
    const EVERY_READ: [&str; 4] = [
        LOAD_PAIRS_SQL,
        LOAD_POPULAR_SQL,
        LOAD_CATEGORY_ITEMS_SQL,
        LOAD_ITEMS_SQL,
    ];
    const T0: i64 = 1_700_000_000_000;

    fn body(id: &str, category: &str) -> Option<String> {
        Some(format!(
            r#"{{"product_id":"{id}","name":"{id}","category":"{category}"}}"#
        ))
    }

    fn pair(a: &str, b: &str, views: i64) -> CandidateRow {
        CandidateRow {
            item_a: Some(a.into()),
            item_b: Some(b.into()),
            co_views: Some(views),
            co_purchases: Some(0),
            body: body(b, "shoes"),
            ..CandidateRow::default()
        }
    }

    fn stat(id: &str, views: i64) -> CandidateRow {
        CandidateRow {
            product_id: Some(id.into()),
            views: Some(views),
            purchases: Some(0),
            body: body(id, "bags"),
            ..CandidateRow::default()
        }
    }

    fn listed(category: &str, id: &str) -> CandidateRow {
        CandidateRow {
            category: Some(category.into()),
            body: body(id, category),
            ..CandidateRow::default()
        }
    }

    fn item(id: &str) -> CandidateRow {
        CandidateRow {
            product_id: Some(id.into()),
            body: body(id, "shoes"),
            ..CandidateRow::default()
        }
    }

    struct Profile {
        viewed: Vec<String>,
        categories: BTreeMap<String, u64>,
        exclude: BTreeSet<String>,
    }

    impl Profile {
        fn new(viewed: &[&str], categories: &[&str]) -> Self {
            Self {
                viewed: viewed.iter().map(|s| s.to_string()).collect(),
                categories: categories.iter().map(|c| (c.to_string(), 1)).collect(),
                exclude: BTreeSet::new(),
            }
        }

        fn signals(&self) -> Signals<'_> {
            Signals {
                viewed: &self.viewed,
                categories: &self.categories,
                exclude: &self.exclude,
            }
        }
    }

    /// Rows D1 would return for a plan over products `a`/`b` in category `shoes`.
    fn rows_for(plan: &CandidatePlan) -> Vec<Vec<CandidateRow>> {
        plan.reads
            .iter()
            .map(|read| match read {
                Read::Pairs(ids) => ids
                    .iter()
                    .filter(|id| *id == "a")
                    .map(|_| pair("a", "c", 3))
                    .collect(),
                Read::Popular => vec![stat("p", 9)],
                Read::Categories(names) => names.iter().map(|n| listed(n, "s1")).collect(),
                Read::Items(ids) => ids
                    .iter()
                    .filter(|id| *id != "gone")
                    .map(|id| item(id))
                    .collect(),
            })
            .collect()
    }

    fn sqls(plan: &CandidatePlan) -> Vec<String> {
        plan.statements().into_iter().map(|s| s.sql).collect()
    }

    fn counts(mut row: CandidateRow) -> CandidateRow {
        row.body = None;
        row
    }

    #[test]
    fn other_shards_read_only_counts_with_the_same_parameters() {
        let cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a", "b"], &["shoes"]);
        let plan = cache.plan(&profile.signals(), true, T0);
        let shard = plan.shard_statements();
        let all = plan.statements();
        assert_eq!(
            shard
                .iter()
                .map(|(i, s)| (*i, s.sql.as_str()))
                .collect::<Vec<_>>(),
            [(0, LOAD_SHARD_PAIRS_SQL), (1, LOAD_SHARD_POPULAR_SQL)],
            "listings and items live in DB only"
        );
        assert_eq!(shard[0].1.params, all[0].params);
        assert_eq!(shard[1].1.params, all[1].params);
        assert!(!LOAD_SHARD_PAIRS_SQL.contains("catalog_items"));
        assert!(!LOAD_SHARD_POPULAR_SQL.contains("catalog_items"));
    }

    #[test]
    fn shards_counts_add_up_and_rank_as_one_read() {
        let cache = CandidateCache::new(TTL, 100, 2);
        let profile = Profile::new(&["a"], &[]);
        let plan = cache.plan(&profile.signals(), true, T0);
        // DB: a's partners c (3), d (2) and u (1, not catalogued); popular p (9), q (4).
        let mut rows = vec![
            vec![
                pair("a", "c", 3),
                pair("a", "d", 2),
                counts(pair("a", "u", 1)),
            ],
            vec![stat("p", 9), stat("q", 4)],
            vec![],
        ];
        // Shard 1 adds d (2) and e (1); shard 2 adds d (1), e (4) and r (8) to popular.
        let shards = vec![
            vec![
                vec![counts(pair("a", "d", 2)), counts(pair("a", "e", 1))],
                vec![counts(stat("q", 3))],
            ],
            vec![
                vec![counts(pair("a", "d", 1)), counts(pair("a", "e", 4))],
                vec![counts(stat("r", 8))],
            ],
        ];
        let read = plan.add_shards(&mut rows, &shards);
        let ranked: Vec<(&str, i64)> = rows[0]
            .iter()
            .map(|r| (r.item_b.as_deref().unwrap(), r.co_views.unwrap()))
            .collect();
        assert_eq!(
            ranked,
            [("d", 5), ("e", 5), ("c", 3), ("u", 1)],
            "summed, then by score and ID"
        );
        let popular: Vec<(&str, i64)> = rows[1]
            .iter()
            .map(|r| (r.product_id.as_deref().unwrap(), r.views.unwrap()))
            .collect();
        assert_eq!(
            popular,
            [("p", 9), ("r", 8)],
            "summed and cut at the popular limit"
        );
        assert!(rows[0][0].body.is_some(), "DB's row keeps its body");
        let read = read.expect("bodies of partners only shards counted (u: DB has none)");
        assert_eq!(read.sql, LOAD_ITEMS_SQL);
        assert_eq!(read.params, [Param::Text(r#"["e","r"]"#.into())]);

        CandidatePlan::add_bodies(&mut rows, &[item("e"), item("r")]);
        let bodiless: Vec<_> = rows.iter().flatten().filter(|r| r.body.is_none()).collect();
        assert_eq!(bodiless.len(), 1);
        assert_eq!(bodiless[0].item_b.as_deref(), Some("u"));
        let set = cache.clone().absorb(plan, rows, T0);
        assert!(set.catalog.contains_key("e") && set.catalog.contains_key("r"));
    }

    #[test]
    fn a_partner_cut_after_the_limit_stays_cut_when_summed() {
        let cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a"], &[]);
        let plan = cache.plan(&profile.signals(), false, T0);
        let ours: Vec<CandidateRow> = (0..PAIRS_PER_ITEM as i64)
            .map(|i| pair("a", &format!("b{i:03}"), 100 - i))
            .collect();
        let mut rows = vec![ours, vec![]];
        let theirs = vec![vec![vec![
            counts(pair("a", "z", 1)),
            counts(pair("a", "b000", 1)),
        ]]];
        plan.add_shards(&mut rows, &theirs);
        assert_eq!(rows[0].len(), PAIRS_PER_ITEM);
        assert_eq!(rows[0][0].co_views, Some(101));
        assert!(rows[0].iter().all(|r| r.item_b.as_deref() != Some("z")));
    }

    #[test]
    fn without_other_shards_nothing_changes() {
        let cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a"], &["shoes"]);
        let plan = cache.plan(&profile.signals(), true, T0);
        let mut rows = rows_for(&plan);
        let before = format!("{rows:?}");
        assert!(plan.add_shards(&mut rows, &[]).is_none());
        assert_eq!(format!("{rows:?}"), before);
    }

    #[test]
    fn a_cold_cache_reads_every_input_once() {
        let cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a", "b", "a"], &["shoes"]);
        let plan = cache.plan(&profile.signals(), true, T0);
        assert_eq!(sqls(&plan), EVERY_READ);
        let statements = plan.statements();
        assert_eq!(
            statements[0].params,
            [Param::Text(r#"["a","b"]"#.into()), Param::Int(50)]
        );
        assert_eq!(statements[1].params, [Param::Int(50)]);
        assert_eq!(
            statements[2].params,
            [Param::Text(r#"["shoes"]"#.into()), Param::Int(100)]
        );
        assert_eq!(statements[3].params, [Param::Text(r#"["a","b"]"#.into())]);
    }

    #[test]
    fn a_warm_cache_decides_without_reads_and_returns_the_same_candidates() {
        let mut cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a", "b"], &["shoes"]);
        let plan = cache.plan(&profile.signals(), true, T0);
        let rows = rows_for(&plan);
        let first = cache.absorb(plan, rows, T0);
        assert_eq!(first.pairs.len(), 1);
        assert_eq!(first.popular[0].product_id, "p");
        let ids: Vec<&str> = first.catalog.keys().map(String::as_str).collect();
        assert_eq!(ids, ["a", "b", "c", "p", "s1"]);

        let plan = cache.plan(&profile.signals(), true, T0 + TTL - 1);
        assert!(plan.statements().is_empty(), "everything was cached");
        let second = cache.absorb(plan, Vec::new(), T0 + TTL - 1);
        assert_eq!(second, first);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a"], &["shoes"]);
        let plan = cache.plan(&profile.signals(), true, T0);
        let rows = rows_for(&plan);
        cache.absorb(plan, rows, T0);
        let plan = cache.plan(&profile.signals(), true, T0 + TTL);
        assert_eq!(plan.statements().len(), 4);
    }

    #[test]
    fn products_without_partners_and_unknown_items_are_remembered_as_such() {
        let mut cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["b", "gone"], &[]);
        let plan = cache.plan(&profile.signals(), false, T0);
        let rows = rows_for(&plan);
        let set = cache.absorb(plan, rows, T0);
        assert!(set.pairs.is_empty());
        assert!(!set.catalog.contains_key("gone"));
        let plan = cache.plan(&profile.signals(), false, T0 + 1);
        assert!(plan.statements().is_empty());
    }

    #[test]
    fn visitors_share_entries_and_read_only_what_they_lack() {
        let mut cache = CandidateCache::new(TTL, 100, 50);
        let first = Profile::new(&["a"], &["shoes"]);
        let plan = cache.plan(&first.signals(), true, T0);
        let rows = rows_for(&plan);
        cache.absorb(plan, rows, T0);
        let second = Profile::new(&["a", "b"], &["shoes", "bags"]);
        let plan = cache.plan(&second.signals(), true, T0 + 1);
        let statements = plan.statements();
        assert_eq!(
            sqls(&plan),
            [LOAD_PAIRS_SQL, LOAD_CATEGORY_ITEMS_SQL, LOAD_ITEMS_SQL]
        );
        assert_eq!(statements[0].params[0], Param::Text(r#"["b"]"#.into()));
        assert_eq!(statements[1].params[0], Param::Text(r#"["bags"]"#.into()));
        assert_eq!(statements[2].params[0], Param::Text(r#"["b"]"#.into()));
        let rows = rows_for(&plan);
        let set = cache.absorb(plan, rows, T0 + 1);
        assert_eq!(set.pairs.len(), 1, "a's cached partner");
        assert!(set.catalog.contains_key("s1") && set.catalog.contains_key("b"));
    }

    #[test]
    fn writes_drop_exactly_the_products_and_categories_they_change() {
        let mut cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a", "b"], &["shoes", "bags"]);
        let plan = cache.plan(&profile.signals(), true, T0);
        let rows = rows_for(&plan);
        cache.absorb(plan, rows, T0);
        cache.forget(&Changed {
            products: BTreeSet::from(["b".to_string()]),
            categories: BTreeSet::from(["bags".to_string()]),
        });
        let plan = cache.plan(&profile.signals(), true, T0 + 1);
        let statements = plan.statements();
        let without_popular: Vec<&str> = EVERY_READ
            .iter()
            .copied()
            .filter(|sql| *sql != LOAD_POPULAR_SQL)
            .collect();
        assert_eq!(
            sqls(&plan),
            without_popular,
            "the popular list waits for its expiry"
        );
        assert_eq!(statements[0].params[0], Param::Text(r#"["b"]"#.into()));
        assert_eq!(statements[1].params[0], Param::Text(r#"["bags"]"#.into()));
        assert_eq!(statements[2].params[0], Param::Text(r#"["b"]"#.into()));
        cache.clear();
        assert_eq!(
            cache
                .plan(&profile.signals(), true, T0 + 1)
                .statements()
                .len(),
            4
        );
    }

    #[test]
    fn a_plan_keeps_its_hits_when_the_cache_is_cleared_during_the_reads() {
        let mut cache = CandidateCache::new(TTL, 100, 50);
        let profile = Profile::new(&["a"], &[]);
        let plan = cache.plan(&profile.signals(), true, T0);
        let rows = rows_for(&plan);
        let before = cache.absorb(plan, rows, T0);
        let plan = cache.plan(&profile.signals(), true, T0 + 1);
        cache.clear();
        assert_eq!(cache.absorb(plan, Vec::new(), T0 + 1), before);
    }

    #[test]
    fn zero_ttl_keeps_nothing_and_a_full_cache_starts_over() {
        let mut off = CandidateCache::new(0, 100, 50);
        let profile = Profile::new(&["a"], &["shoes"]);
        let plan = off.plan(&profile.signals(), true, T0);
        let rows = rows_for(&plan);
        off.absorb(plan, rows, T0);
        assert_eq!(off.plan(&profile.signals(), true, T0).statements().len(), 4);

        let mut small = CandidateCache::new(TTL, 2, 50);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            let p = Profile::new(&[id], &[]);
            let plan = small.plan(&p.signals(), false, T0 + i as i64);
            let rows = rows_for(&plan);
            small.absorb(plan, rows, T0 + i as i64);
        }
        assert!(small.pairs.entries.len() <= 2 && small.items.entries.len() <= 2);
        let c = Profile::new(&["c"], &[]);
        assert!(
            small
                .plan(&c.signals(), false, T0 + 3)
                .statements()
                .is_empty(),
            "the newest stays"
        );
    }

    #[test]
    fn a_kind_over_its_byte_budget_starts_over_and_nothing_larger_is_kept() {
        let mut cache = CandidateCache::new(TTL, 1_000, 50);
        let profile = Profile::new(&["a"], &["shoes"]);
        let plan = cache.plan(&profile.signals(), false, T0);
        let rows = rows_for(&plan);
        let set = cache.absorb(plan, rows, T0);
        let [pairs, listings, items] = cache.bytes();
        assert!(
            pairs > 0 && listings > 0 && items > 0,
            "{:?}",
            cache.bytes()
        );

        // A budget that holds one partner list but not two: the second starts the kind over.
        let one = pairs + 10;
        let mut tight = CandidateCache::new(TTL, 1_000, 50).with_max_bytes(one);
        for (i, id) in ["a", "b"].into_iter().enumerate() {
            let p = Profile::new(&[id], &[]);
            let plan = tight.plan(&p.signals(), false, T0 + i as i64);
            let rows = rows_for(&plan);
            tight.absorb(plan, rows, T0 + i as i64);
            assert!(tight.bytes()[0] <= one, "{:?}", tight.bytes());
        }
        assert_eq!(tight.pairs.entries.len(), 1, "only the newest list fits");

        // Nothing larger than the whole budget is kept, and the decision still gets its rows.
        let mut tiny = CandidateCache::new(TTL, 1_000, 50).with_max_bytes(1);
        let plan = tiny.plan(&profile.signals(), false, T0);
        let rows = rows_for(&plan);
        let tiny_set = tiny.absorb(plan, rows, T0);
        assert_eq!(tiny.bytes(), [0, 0, 0]);
        assert_eq!(
            tiny_set.pairs, set.pairs,
            "what was read is used, kept or not"
        );

        // Forgetting gives the bytes back.
        cache.clear();
        assert_eq!(cache.bytes(), [0, 0, 0]);
    }
}
