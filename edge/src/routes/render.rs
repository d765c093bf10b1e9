//! Edge-rendered pages: the site's HTML is fetched from the `ASSETS` binding and every
//! `<div data-seam-slot="...">` it carries (`recommended-for-you`, `discount-banner`, ...) is
//! filled server-side (with `lol_html`) from the visitor's `__Host-seam_id` cookie and the slot
//! templates of `config/slots.json`, so the page arrives personalised without JavaScript or
//! flicker. Consent: `Sec-GPC: 1` or the SDK's consent cookie at `0` give non-personal
//! defaults. Every product field is HTML-escaped; the security headers of `_headers` are kept.

use std::rc::Rc;

use lol_html::html_content::ContentType;
use lol_html::{element, rewrite_str, RewriteStrSettings};
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::source::Source;
use seam_core::identity::Rules;
use seam_core::personalise::decide::{Decisions, Exposure, Slot};
use seam_core::personalise::slot::slots_in_html;
use serde_json::json;
use worker::{
    Context, D1Database, Env, Fetch, Method, Request, RequestInit, RequestRedirect, Response,
};

use crate::error::ApiError;
use crate::isolate::{self, Page};
use crate::store::decisions::Visitor;
use crate::store::shards::Shards;
use crate::{http, jobs, settings, store};

/// Security headers every HTML page gets when the Worker serves it (the same as
/// `scripts/build-site.mjs` writes into `_headers`; a CSP already on the asset response wins).
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
    (
        "Permissions-Policy",
        "camera=(), microphone=(), geolocation=()",
    ),
];
/// Fallback CSP when the asset response has none: no inline scripts at all.
const FALLBACK_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Who asks for a page, and from where.
struct Visit<'a> {
    url: &'a worker::Url,
    facts: RequestFacts,
    visitor: Option<String>,
    site: Option<Source>,
    opted_out: bool,
    now_ms: i64,
}

/// The page with its slots filled, and the visitor's exposure logged.
async fn personalise(
    env: &Env,
    ctx: &Context,
    html: &str,
    slots: &[Slot],
    visit: Visit<'_>,
) -> Result<String, ApiError> {
    let db = Shards::of(env)?;
    let rules = settings::identity_rules(env)?;
    let who = Visitor {
        anonymous_id: visit.visitor.as_deref(),
        user_id: None,
    };
    let decisions =
        store::decisions::decide(env, &db, &rules, who, slots, visit.opted_out, visit.now_ms)
            .await?;
    let body = fill(html, &decisions).map_err(|e| ApiError::Storage(format!("render: {e}")))?;
    if let (Some(visitor), Some(_), Some(site)) =
        (&visit.visitor, &decisions.profile_id, &visit.site)
    {
        log_exposure(env, ctx, (&db, &rules), &visit, visitor, &decisions, site).await?;
    }
    Ok(body)
}

/// Serves a site path at `now_ms`: HTML pages with slots are rendered, everything else passes
/// through.
pub async fn page(
    req: Request,
    env: &Env,
    ctx: &Context,
    now_ms: i64,
) -> Result<Response, ApiError> {
    let facts = http::facts(&req, settings::cookie_key(env).as_ref());
    let visitor = facts.cookie_id.clone();
    let url = req.url()?;
    // Global Privacy Control opts out of ad personalisation, and the SDK's consent cookie says
    // when the visitor denied it: non-personal defaults either way.
    let opted_out = http::header(&req, "Sec-GPC").is_some_and(|v| v.trim() == "1")
        || http::personalisation_refused(&req);
    let site = store::sources::configured(env)?
        .site_source(&url.origin().ascii_serialization())
        .cloned();
    // The site's pages come from its own origin when the source names one, else from the
    // Worker's assets.
    let proxied = site.as_ref().and_then(|s| s.site_origin.clone());
    let cache_key =
        (proxied.is_none() && req.method() == Method::Get).then(|| url.path().to_owned());
    let page = match cache_key.as_deref().and_then(isolate::cached_page) {
        Some(page) => page,
        None => {
            let mut asset = match &proxied {
                Some(origin) => fetch_origin(&req, origin, &url).await?,
                None => env.assets("ASSETS")?.fetch_request(req).await?,
            };
            let is_html = asset
                .headers()
                .get("Content-Type")?
                .is_some_and(|t| t.starts_with("text/html"));
            if asset.status_code() != 200 || !is_html {
                return Ok(asset);
            }
            let html = asset.text().await?;
            let page = Rc::new(Page {
                slots: slots_in_html(&html),
                html,
                headers: asset.headers().entries().collect(),
            });
            if let Some(key) = cache_key {
                isolate::keep_page(key, &page);
            }
            page
        }
    };
    let html = page.html.as_str();
    let slots: Vec<Slot> = page.slots.iter().map(|id| Slot::named(id)).collect();
    let body = if slots.is_empty() {
        html.to_owned()
    } else {
        let visit = Visit {
            url: &url,
            facts,
            visitor,
            site,
            opted_out,
            now_ms,
        };
        match personalise(env, ctx, html, &slots, visit).await {
            Ok(body) => body,
            // The page is the site's: when a decision cannot be made (storage down), the slots
            // keep the content the page ships with rather than the page failing.
            Err(e) => {
                worker::console_error!("render: slots left as served: {}", e.code());
                html.to_owned()
            }
        }
    };
    let mut response = Response::from_html(body)?;
    let headers = response.headers_mut();
    // The page's own headers (cookies, its CSP), less those that described the original bytes.
    for (name, value) in &page.headers {
        if !UNCOPIED.contains(&name.as_str()) {
            headers.append(name, value)?;
        }
    }
    // A page keeps its own policy (a proxied site's, or the build's for the Worker's assets);
    // a page without one gets this strict one.
    if headers.get("Content-Security-Policy")?.is_none() {
        headers.set("Content-Security-Policy", FALLBACK_CSP)?;
    }
    for (name, value) in SECURITY_HEADERS {
        if headers.get(name)?.is_none() {
            headers.set(name, value)?;
        }
    }
    // Personalised per visitor: never shared by caches.
    headers.set("Cache-Control", "private, no-store")?;
    headers.append("Vary", "Cookie")?;
    Ok(response)
}

/// Response headers of the fetched page not copied to the rendered one: they described the
/// original bytes (the rendered body differs per visitor).
const UNCOPIED: [&str; 6] = [
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "etag",
    "last-modified",
    "content-type",
];

/// GETs `url`'s path and query from the site's origin, with the visitor's headers.
async fn fetch_origin(
    req: &Request,
    origin: &str,
    url: &worker::Url,
) -> Result<Response, ApiError> {
    let mut target = format!("{origin}{}", url.path());
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let headers = req.headers().clone();
    let host = url.host_str().unwrap_or_default();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    headers.set("X-Forwarded-Host", &host)?;
    headers.set("X-Forwarded-Proto", url.scheme())?;
    // Credentials meant for this Worker are not the origin's to see.
    headers.delete("Authorization")?;
    let mut init = RequestInit::new();
    // A redirect is the origin's answer to the browser, which follows it itself: the Worker
    // fetching wherever it points would let the origin aim the Worker at any address.
    init.with_method(req.method())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    let request = Request::new_with_init(&target, &init)?;
    Ok(Fetch::Request(request).send().await?)
}

/// Logs the rendered decision as a `Decision Exposed` event of the site's source (written
/// shortly after the response with others: `jobs::exposures`). Only known visitors: an exposure
/// nobody can be attributed to measures no lift.
async fn log_exposure(
    env: &Env,
    ctx: &Context,
    (db, rules): (&D1Database, &Rules),
    visit: &Visit<'_>,
    visitor: &str,
    decisions: &Decisions,
    source: &Source,
) -> Result<(), ApiError> {
    // `seam.rendered`: the slot was filled by the edge, not by the SDK.
    let context = json!({
        "page": { "path": visit.url.path(), "url": visit.url.as_str() },
        "seam": { "rendered": true },
    });
    let event = Exposure {
        decisions,
        anonymous_id: Some(visitor),
        user_id: None,
        message_id: None,
        context: &context,
    }
    .event(visit.now_ms);
    let facts = Some(&visit.facts);
    let prepared = store::events::prepare(db, rules, source, facts, &[event], visit.now_ms).await?;
    jobs::exposures::log_soon(env, ctx, source, prepared)
}

/// Fills each decided slot of `html` with its markup (a slot without markup, such as a banner
/// nobody qualifies for, keeps the page's own content) and marks it with variant and reason.
pub fn fill(html: &str, decisions: &Decisions) -> Result<String, lol_html::errors::RewritingError> {
    let mut settings = RewriteStrSettings::new();
    for d in &decisions.slots {
        settings = settings.append_element_content_handler({
            let selector = format!("[data-seam-slot=\"{}\"]", d.slot.id);
            element!(selector, move |el| {
                if !d.html.is_empty() {
                    el.set_inner_content(&d.html, ContentType::Html);
                }
                el.set_attribute("data-seam-rendered", &d.variant)?;
                el.set_attribute("data-seam-reason", d.reason)?;
                Ok(())
            })
        });
    }
    rewrite_str(html, settings)
}
