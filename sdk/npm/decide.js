// @seam/sdk/decide: on-page decisions from the edge (`POST /v1/decide`) for pages the Worker does
// not render itself. An optional add-on, so the core SDK stays within its size budget; it reads
// the visitor's ID and consent from the loaded SDK.
import { anonymousId, consent } from "./index.js";

/**
 * Asks the edge what each slot shows and (unless `fill: false`) fills the page's
 * `[data-seam-slot]` elements. Resolves to the decisions, or undefined when the collector could
 * not answer (the page keeps its own content).
 */
export async function decide(slots, options = {}) {
  const { writeKey, endpoint = "", userId, fill: fillPage = true, root = document } = options;
  try {
    const response = await fetch(`${endpoint}/v1/decide`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        writeKey,
        anonymousId: anonymousId(),
        userId,
        slots,
        context: { consent: consent.get() ?? refusal(), page: { path: location.pathname, url: location.href } },
      }),
    });
    if (!response.ok) return undefined;
    const result = await response.json();
    if (fillPage) fill(result, root);
    return result;
  } catch {
    return undefined;
  }
}

// Before the SDK is ready it cannot say the visitor's consent; the cookie it keeps for pages
// still can (for a collector on another host, which does not get the cookie).
function refusal() {
  if (/(^|; )(__Host-)?seam_personalise=0(;|$)/.test(document.cookie)) return { gcm: { personalization_storage: "denied" } };
}

/**
 * Fills `[data-seam-slot="<slot>"]` elements with each decision's markup (rendered by the edge
 * from its slot templates, every field escaped there) and marks them with variant and reason.
 * A decision without markup (no banner applies) leaves the element's own content.
 */
export function fill(result, root = document) {
  for (const d of (result && result.decisions) || []) {
    for (const el of root.querySelectorAll("[data-seam-slot]")) {
      if (el.dataset.seamSlot !== d.slot) continue;
      if (d.html) el.innerHTML = d.html;
      el.dataset.seamRendered = d.variant;
      el.dataset.seamReason = d.reason;
    }
  }
}
