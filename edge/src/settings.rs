//! Deployment settings beyond sources: identity rules and retention.

use seam_core::activate::policy::Backoff;
use seam_core::identity::Rules;
use seam_core::privacy::retention::Retention;
use worker::Env;

use crate::error::ApiError;

/// Identity rules from the optional `IDENTITY_RULES` JSON setting (defaults otherwise), with the
/// `PII_SALT` secret for hashed emails and phones and the `PROFILE_ID_SALT` secret for profile IDs.
pub fn identity_rules(env: &Env) -> Result<Rules, ApiError> {
    let mut rules = configured_rules(env)?;
    rules.pii_salt = env
        .secret("PII_SALT")
        .map(|s| s.to_string())
        .ok()
        .filter(|s| !s.is_empty());
    rules.profile_salt = env
        .secret("PROFILE_ID_SALT")
        .map(|s| s.to_string())
        .ok()
        .filter(|s| !s.is_empty());
    Ok(rules)
}

fn configured_rules(env: &Env) -> Result<Rules, ApiError> {
    let setting = env
        .var("IDENTITY_RULES")
        .map(|v| v.to_string())
        .unwrap_or_default();
    if setting.trim().is_empty() {
        return Ok(Rules::default());
    }
    let value: serde_json::Value = serde_json::from_str(&setting).map_err(|_| {
        ApiError::IdentityConfig(seam_core::identity::IdentityConfigError::NotAnObject)
    })?;
    Rules::from_json(&value).map_err(ApiError::IdentityConfig)
}

/// The `IDENTITY_SECRET` that identity tokens are signed with, when configured (at least 16
/// bytes: a shorter secret could be guessed from one token).
pub fn identity_secret(env: &Env) -> Option<Vec<u8>> {
    env.secret("IDENTITY_SECRET")
        .map(|s| s.to_string().into_bytes())
        .ok()
        .filter(|s| s.len() >= 16)
}

/// Retention settings (`RETENTION_*` vars); defaults otherwise.
pub fn retention(env: &Env) -> Result<Retention, ApiError> {
    Retention::from_settings(|name| env.var(name).ok().map(|v| v.to_string()))
        .map_err(ApiError::Retention)
}

/// The key destination secrets are sealed with, from the `SECRETS_KEY` secret.
pub fn secrets_key(env: &Env) -> Option<[u8; 32]> {
    let secret = env.secret("SECRETS_KEY").ok()?.to_string();
    seam_core::activate::sealed::key(secret.as_bytes()).ok()
}

/// The key the ID cookie (`__Host-seam_id`) is sealed with, derived from the `SECRETS_KEY`
/// secret (its own domain; at least 16 bytes, as for sealing). Without it the collector neither
/// sets nor honours the cookie. Changing `SECRETS_KEY` gives every visitor a new ID on their
/// next visit.
pub fn cookie_key(env: &Env) -> Option<[u8; 32]> {
    let secret = env.secret("SECRETS_KEY").ok()?.to_string();
    (secret.len() >= 16).then(|| seam_core::collect::cookie::key(secret.as_bytes()))
}

/// Whether `/health` and ingest responses report where time goes (`REPORT_TIMINGS=true`, for
/// `npm run bench`): off by default, since the counts tell traffic volume.
pub fn report_timings(env: &Env) -> bool {
    env.var("REPORT_TIMINGS")
        .map(|v| v.to_string() == "true")
        .unwrap_or(false)
}

/// Whether destinations may be local receivers (`ALLOW_LOCAL_DESTINATIONS=true`, in
/// `.dev.vars` for local development only).
pub fn allow_local_destinations(env: &Env) -> bool {
    env.secret("ALLOW_LOCAL_DESTINATIONS")
        .map(|v| v.to_string() == "true")
        .unwrap_or(false)
}

/// Delivery retries: `DELIVERY_RETRY_WINDOW_MINUTES` (default 240, Segment's four hours) and
/// `DELIVERY_FIRST_RETRY_SECONDS` (default 30; doubled per attempt up to an hour).
pub fn delivery_backoff(env: &Env) -> Backoff {
    let number = |name: &str| whole_number::<i64>(env, name).filter(|n| *n > 0);
    let mut backoff = Backoff::default();
    if let Some(minutes) = number("DELIVERY_RETRY_WINDOW_MINUTES") {
        backoff.window_ms = minutes.saturating_mul(60_000);
    }
    if let Some(seconds) = number("DELIVERY_FIRST_RETRY_SECONDS") {
        backoff.first_ms = seconds.saturating_mul(1_000);
    }
    backoff
}

/// How long a forwarded erasure waits before it is sent: `DELIVERY_ERASURE_DELAY_SECONDS`
/// (default 900, the longest a delivery already under way can take).
pub fn erasure_delay_ms(env: &Env) -> i64 {
    whole_number::<i64>(env, "DELIVERY_ERASURE_DELAY_SECONDS")
        .filter(|s| *s >= 0)
        .map_or(seam_core::activate::deliver::ERASURE_DELAY_MS, |s| {
            s.saturating_mul(1000)
        })
}

/// The `HOOKS_SECRET` that provider webhooks carry in their URL (`/v1/hooks/sendgrid/{secret}`),
/// when configured (at least 16 bytes).
pub fn hooks_secret(env: &Env) -> Option<String> {
    env.secret("HOOKS_SECRET")
        .map(|s| s.to_string())
        .ok()
        .filter(|s| s.len() >= 16)
}

/// The key per-person coupon codes are made with: `SECRETS_KEY` (core's coupon HMAC has its
/// own domain), so a code cannot be computed by anyone who lacks it.
pub fn coupon_secret(env: &Env) -> Option<[u8; 32]> {
    secrets_key(env)
}

/// `JOURNEY_TIME_SCALE`: journeys' waits run this many times faster (`3600`: an hour in a
/// second), for demos and tests; 1 (real time) unless set.
pub fn journey_time_scale(env: &Env) -> i64 {
    whole_number::<i64>(env, "JOURNEY_TIME_SCALE")
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// The budget of one run of a profile shard move ([`reshard::Budget`]): `PROFILE_MOVE_STEP`
/// and `PROFILE_MOVES_PER_RUN` lower it (tests walk over several runs); unset, or not a whole
/// number from 1 to the default, keeps the default.
///
/// [`reshard::Budget`]: crate::jobs::reshard::Budget
pub fn profile_move_budget(env: &Env) -> crate::jobs::reshard::Budget {
    let mut budget = crate::jobs::reshard::Budget::default();
    let number =
        |name: &str, most: u32| whole_number::<u32>(env, name).filter(|n| (1..=most).contains(n));
    if let Some(step) = number("PROFILE_MOVE_STEP", budget.step) {
        budget.step = step;
    }
    if let Some(moves) = number("PROFILE_MOVES_PER_RUN", budget.moves as u32) {
        budget.moves = moves as usize;
    }
    budget
}

/// `PROFILE_SHARDS`: how many D1 databases the profiles' personalisation state is spread over
/// (1, the default, keeps it in `DB`). Anything but a whole number from 1 to
/// [`MAX_SHARDS`](seam_core::personalise::shard::MAX_SHARDS) is an error, never a fallback: a
/// different count moves profiles between shards.
pub fn profile_shards(env: &Env) -> Result<u32, ApiError> {
    let Ok(value) = env.var("PROFILE_SHARDS") else {
        return Ok(1);
    };
    value
        .to_string()
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=seam_core::personalise::shard::MAX_SHARDS).contains(n))
        .ok_or_else(|| ApiError::Storage("PROFILE_SHARDS is not a number from 1 to 64".into()))
}

/// `PROFILE_SHARDS_FROM`: while the shard count changes, the count before (state rows may still
/// be where it put them until the move job has walked every shard). Unset or equal to
/// `PROFILE_SHARDS`: no move.
pub fn profile_shards_from(env: &Env) -> Result<Option<u32>, ApiError> {
    let Ok(value) = env.var("PROFILE_SHARDS_FROM") else {
        return Ok(None);
    };
    let from = value
        .to_string()
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=seam_core::personalise::shard::MAX_SHARDS).contains(n))
        .ok_or_else(|| {
            ApiError::Storage("PROFILE_SHARDS_FROM is not a number from 1 to 64".into())
        })?;
    Ok((from != profile_shards(env)?).then_some(from))
}

/// A variable read as a number; `None` when unset or not one (each caller keeps its default).
fn whole_number<T: std::str::FromStr>(env: &Env, name: &str) -> Option<T> {
    env.var(name).ok()?.to_string().trim().parse().ok()
}
