//! Edge-rendered pages: the site's HTML is fetched from the `ASSETS` binding and its
//! `<div data-seam-slot="recommended-for-you">` is filled server-side (with `lol_html`) from the
//! visitor's `seam_id` cookie, so the page arrives personalised without JavaScript or flicker.
//! Every product field is HTML-escaped; the security headers of `dist/site/_headers` are kept.

use lol_html::html_content::ContentType;
use lol_html::{element, rewrite_str, RewriteStrSettings};
use seam_core::enrich::RequestFacts;
use seam_core::recommend::CatalogItem;
use serde_json::json;
use worker::{Context, Env, Request, Response};

use super::decide::{decide, Decisions, Exposure, Slot};
use crate::error::ApiError;
use crate::{http, settings, store};

/// The slot the demo site's pages carry.
pub const RECOMMENDED: &str = "recommended-for-you";
const ITEMS: usize = 4;

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

/// Serves a site path: HTML pages with slots are rendered, everything else passes through.
pub async fn page(req: Request, env: &Env, ctx: &Context) -> Result<Response, ApiError> {
    let visitor = http::cookie_id(&req);
    let facts = http::facts(&req);
    let url = req.url()?;
    // Global Privacy Control opts out of ad personalisation: non-personal defaults.
    let opted_out = http::header(&req, "Sec-GPC").is_some_and(|v| v.trim() == "1");
    let mut asset = env.assets("ASSETS")?.fetch_request(req).await?;
    let is_html = asset
        .headers()
        .get("Content-Type")?
        .is_some_and(|t| t.starts_with("text/html"));
    if asset.status_code() != 200 || !is_html {
        return Ok(asset);
    }
    let html = asset.text().await?;
    let marker = format!("data-seam-slot=\"{RECOMMENDED}\"");
    let body = if html.contains(&marker) {
        let db = env.d1("DB")?;
        let rules = settings::identity_rules(env)?;
        let slots = [Slot {
            id: RECOMMENDED.into(),
            limit: ITEMS,
        }];
        let decisions = decide(
            env,
            &db,
            &rules,
            visitor.as_deref(),
            None,
            &slots,
            opted_out,
        )
        .await?;
        let body =
            fill(&html, &decisions).map_err(|e| ApiError::Storage(format!("render: {e}")))?;
        if let (Some(visitor), Some(_)) = (visitor, &decisions.profile_id) {
            log_exposure(env, ctx, &url, facts, visitor, decisions)?;
        }
        body
    } else {
        html
    };
    let mut response = Response::from_html(body)?;
    let headers = response.headers_mut();
    let csp = asset.headers().get("Content-Security-Policy")?;
    headers.set(
        "Content-Security-Policy",
        csp.as_deref().unwrap_or(FALLBACK_CSP),
    )?;
    for (name, value) in SECURITY_HEADERS {
        headers.set(name, value)?;
    }
    // Personalised per visitor: never shared by caches.
    headers.set("Cache-Control", "private, no-store")?;
    headers.set("Vary", "Cookie")?;
    Ok(response)
}

/// Logs the rendered decision as a `Decision Exposed` event of the site's source, after the
/// response (the page does not wait for it). Only known visitors: an exposure nobody can be
/// attributed to measures no lift.
fn log_exposure(
    env: &Env,
    ctx: &Context,
    url: &worker::Url,
    facts: RequestFacts,
    visitor: String,
    decisions: Decisions,
) -> Result<(), ApiError> {
    let Some(source) = store::sources::configured(env)?
        .site_source(&url.origin().ascii_serialization())
        .cloned()
    else {
        return Ok(());
    };
    let db = env.d1("DB")?;
    // `seam.rendered`: the slot was filled by the edge, not by the SDK.
    let context = json!({
        "page": { "path": url.path(), "url": url.as_str() },
        "seam": { "rendered": true },
    });
    crate::after_response(ctx, async move {
        let exposure = Exposure {
            decisions: &decisions,
            anonymous_id: Some(&visitor),
            user_id: None,
            message_id: None,
            context: &context,
        };
        let now_ms = worker::Date::now().as_millis() as i64;
        if let Err(e) = exposure.log(&db, &source, &facts, now_ms).await {
            worker::console_error!("exposure log failed: {}", e.code());
        }
    });
    Ok(())
}

/// Fills the recommendation slot of `html` with the decision's items.
pub fn fill(html: &str, decisions: &Decisions) -> Result<String, lol_html::errors::RewritingError> {
    let Some((_, items)) = decisions.slots.first() else {
        return Ok(html.to_owned());
    };
    let cards: String = items
        .iter()
        .filter_map(|(_, item)| item.as_ref())
        .map(card)
        .collect();
    let inner = format!("<h2>Recommended for you</h2><ul class=\"seam-recs\">{cards}</ul>");
    let variant = decisions.variant();
    let reason = decisions.basis.as_str();
    let handler = element!("[data-seam-slot=\"recommended-for-you\"]", move |el| {
        el.set_inner_content(&inner, ContentType::Html);
        el.set_attribute("data-seam-rendered", variant)?;
        el.set_attribute("data-seam-reason", reason)?;
        Ok(())
    });
    rewrite_str(
        html,
        RewriteStrSettings::new().append_element_content_handler(handler),
    )
}

/// One product card; every field escaped, links only to this site or http(s).
fn card(item: &CatalogItem) -> String {
    let name = escape(item.name.as_deref().unwrap_or(&item.product_id));
    let href = item
        .url
        .as_deref()
        .filter(|u| is_safe_url(u))
        .map(escape)
        .unwrap_or_else(|| format!("/product.html?id={}", escape(&percent(&item.product_id))));
    let category = item
        .category
        .as_deref()
        .map(|c| format!("<span class=\"seam-cat\">{}</span>", escape(c)))
        .unwrap_or_default();
    let price = item
        .price
        .map(|p| format!("<span class=\"seam-price\">{p:.2}</span>"))
        .unwrap_or_default();
    format!(
        "<li data-product-id=\"{}\"><a href=\"{href}\">{name}</a>{category}{price}</li>",
        escape(&item.product_id)
    )
}

fn is_safe_url(url: &str) -> bool {
    (url.starts_with('/') && !url.starts_with("//"))
        || url.starts_with("https://")
        || url.starts_with("http://")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Escapes text for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
