// The demo shop: catalogue, cart and checkout in plain JS. Every shopper action goes through the
// @seam/sdk npm package as a Segment e-commerce event.
import { consent, flush, identify, load, page, reset, track } from "@seam/sdk";
import { products, byId, descriptions } from "./products.js";
import { CART_ID, CART_KEY, addToCart, cartLines, cents, clearCart, removeFromCart, subtotal } from "./cart.js";

const CONSENT_KEY = "demo_consent"; // the site's own record of the visitor's choice

// The site's gtag, as Google's snippet defines it: commands go onto window.dataLayer, where the
// SDK reads them (also those pushed before it loaded).
window.dataLayer = window.dataLayer || [];
function gtag() {
  window.dataLayer.push(arguments);
}

// Consent Mode v2 values for the banner's three buttons (its `data-consent` values).
const all = (value) => ({
  analytics_storage: value,
  ad_storage: value,
  ad_user_data: value,
  ad_personalization: value,
  personalization_storage: value,
});
const CHOICES = {
  granted: all("granted"),
  analytics: { ...all("denied"), analytics_storage: "granted" }, // measurement, no personalisation or ads
  denied: all("denied"),
};

/** The stored choice as Consent Mode values, or null when the visitor has not chosen yet. */
function storedConsent() {
  const raw = localStorage.getItem(CONSENT_KEY);
  // Earlier versions of the shop stored only the analytics choice as a bare string.
  if (raw === "granted" || raw === "denied") return { analytics_storage: raw };
  try {
    const values = JSON.parse(raw);
    return values && typeof values === "object" ? values : null;
  } catch {
    return null;
  }
}

// Everything denied until the visitor chooses (a CMP, if the page has one, answers through
// __tcfapi and the SDK listens to it too); a choice made on an earlier visit applies at once.
gtag("consent", "default", all("denied"));
load({ writeKey: "seam_dev_write_key", flushInterval: 2000, wasm: window.seamWasm });
const choice = storedConsent();
if (choice) consent.update(choice);

// Consent banner: shown until the visitor chooses, and again from the footer's "Privacy settings".
const banner = document.querySelector("#consent");
if (!choice && !window.__tcfapi) banner.hidden = false;
for (const button of banner.querySelectorAll("[data-consent]")) {
  button.addEventListener("click", () => {
    const values = CHOICES[button.dataset.consent];
    localStorage.setItem(CONSENT_KEY, JSON.stringify(values));
    gtag("consent", "update", values); // the way a CMP tells tags: the SDK picks it up from dataLayer
    banner.hidden = true;
  });
}
document.querySelector("#privacy-settings").addEventListener("click", () => {
  banner.hidden = false;
  banner.querySelector("button").focus();
});

// --- Helpers ---------------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);
const euro = new Intl.NumberFormat("en-IE", { style: "currency", currency: "EUR" }).format;
const productHref = (p) => `/product?id=${encodeURIComponent(p.product_id)}`;
const slug = (category) => category.toLowerCase().replace(/\s+/g, "-");
// crypto.randomUUID needs a secure context (https or localhost); plain http elsewhere gets a fallback.
const newId = () => crypto.randomUUID?.() ?? `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;

/** A DOM element: h("a", { href }, "text", child). Text children are text nodes, never HTML. */
function h(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// Decorative next to the product name (alt=""), so a card's link is named by the name alone.
const image = (p) => h("img", { src: p.image_url, alt: "", width: 400, height: 300 });

/** The header's item count, from the stored cart (also when another tab changes it). */
function showCartCount() {
  const count = cartLines().reduce((n, l) => n + l.quantity, 0);
  const badge = $("#cart-count");
  badge.textContent = count;
  badge.hidden = count === 0;
}
showCartCount();
addEventListener("storage", (event) => event.key === CART_KEY && showCartCount());

/** One cart line; with `onRemove`, a Remove button too. */
function cartLine({ product, quantity }, onRemove) {
  const info = h(
    "div",
    { className: "line-info" },
    h("a", { href: productHref(product) }, product.name),
    h("span", { className: "line-qty" }, `Qty ${quantity} × ${euro(product.price)}`),
  );
  const item = h("li", { className: "line" }, image(product), info, h("strong", {}, euro(product.price * quantity)));
  if (onRemove) {
    const remove = h("button", { type: "button", className: "link-button", textContent: "Remove" });
    remove.setAttribute("aria-label", `Remove ${product.name}`);
    remove.addEventListener("click", onRemove);
    item.append(remove);
  }
  return item;
}

// --- Pages -----------------------------------------------------------------------------------

const view = document.body.dataset.view;

if (view === "home") {
  page("Home");
  // index.html has a section per category; each gets its products as cards.
  for (const list of document.querySelectorAll("[data-category]")) {
    for (const p of products.filter((p) => p.category === list.dataset.category)) {
      const link = h("a", { href: productHref(p) }, image(p), h("span", { className: "card-name" }, p.name));
      link.addEventListener("click", () => track("Product Clicked", p));
      list.append(h("li", { className: "card" }, link, h("p", { className: "card-meta" }, p.brand), h("p", { className: "price" }, euro(p.price))));
    }
  }
  track("Product List Viewed", { list_id: "home", products: products.map(({ product_id }) => ({ product_id })) });
}

if (view === "product") {
  const product = byId(new URLSearchParams(location.search).get("id")) ?? products[0];
  document.title = `${product.name} · Seam Shop`;
  Object.assign($("#product-image"), { src: product.image_url, alt: product.name });
  $("#brand").textContent = product.brand;
  $("#name").textContent = product.name;
  Object.assign($("#crumb-category"), { href: `/#${slug(product.category)}`, textContent: product.category });
  $("#price").textContent = euro(product.price);
  $("#description").textContent = descriptions[product.product_id] ?? "";
  page("Product", { product_id: product.product_id });
  track("Product Viewed", product);
  $("#add-to-cart").addEventListener("click", () => {
    track("Product Added", { ...product, quantity: 1, cart_id: CART_ID });
    addToCart(product);
    showCartCount();
    $("#status").textContent = "Added to cart.";
  });
}

if (view === "cart") {
  page("Cart");
  const render = () => {
    const lines = cartLines();
    $("#cart-lines").replaceChildren(
      ...lines.map((line) =>
        cartLine(line, () => {
          track("Product Removed", { ...line.product, quantity: line.quantity, cart_id: CART_ID });
          removeFromCart(line.product);
          showCartCount();
          render();
        }),
      ),
    );
    $("#subtotal").textContent = euro(subtotal(lines));
    $("#cart-empty").hidden = lines.length > 0;
    $("#cart-filled").hidden = lines.length === 0;
    return lines;
  };
  const lines = render();
  track("Cart Viewed", { cart_id: CART_ID, products: lines.map(({ product, quantity }) => ({ ...product, quantity })) });
}

if (view === "checkout") {
  page("Checkout");
  // Valid codes (a real shop checks them server-side); the discount is a share of the subtotal.
  const COUPONS = new Map([
    ["COMEBACK10", { name: "Welcome back: 10% off", percent: 10 }],
    ["WELCOME5", { name: "Welcome: 5% off", percent: 5 }],
  ]);
  const lines = cartLines();
  const sub = subtotal(lines);
  // One order ID for the whole checkout, so its events can be joined.
  const ids = { order_id: newId(), checkout_id: newId() };
  const items = lines.map(({ product: p, quantity }) => ({
    product_id: p.product_id,
    sku: p.sku,
    name: p.name,
    category: p.category,
    brand: p.brand,
    price: p.price,
    quantity,
  }));
  let coupon = null; // { code, name, percent } once one is applied
  const discount = () => (coupon ? cents((sub * coupon.percent) / 100) : 0);

  const showTotals = () => {
    $("#subtotal").textContent = euro(sub);
    $("#discount").textContent = coupon ? `−${euro(discount())} (${coupon.code})` : euro(0);
    $("#total").textContent = euro(sub - discount());
  };
  $("#order-lines").replaceChildren(...lines.map((line) => cartLine(line)));
  $("#checkout-empty").hidden = lines.length > 0;
  $("#place-order").disabled = lines.length === 0;
  showTotals();
  // Nothing to check out with an empty cart: no checkout starts.
  if (lines.length) track("Checkout Started", { ...ids, value: sub, revenue: sub, currency: "EUR", products: items });

  $("#coupon-form").addEventListener("submit", (event) => {
    event.preventDefault(); // handled here; nothing is posted
    const code = $("#coupon").value.trim().toUpperCase();
    if (!code) return;
    const base = { order_id: ids.order_id, cart_id: CART_ID, coupon_id: code };
    track("Coupon Entered", base);
    const offer = COUPONS.get(code);
    if (offer) {
      coupon = { code, ...offer };
      track("Coupon Applied", { ...base, coupon_name: offer.name, discount: discount() });
      $("#coupon-status").textContent = `${offer.name} applied.`;
    } else {
      track("Coupon Denied", { ...base, reason: "Unknown coupon code" });
      $("#coupon-status").textContent = `${code} is not a valid code.`;
    }
    showTotals();
  });

  $("#place-order").addEventListener("click", () => {
    const revenue = cents(sub - discount());
    track("Order Completed", {
      ...ids,
      total: revenue, // no shipping or tax in this shop
      revenue,
      discount: discount(),
      ...(coupon && { coupon: coupon.code }),
      currency: "EUR",
      products: items,
    });
    clearCart();
    showCartCount();
    $("#checkout").hidden = true;
    $("#confirmation-title").textContent = `Thank you — order ${ids.order_id} placed`;
    $("#confirmation").hidden = false;
    $("#confirmation").focus();
  });
}

// --- Account ---------------------------------------------------------------------------------
// The shop's backend (the Worker's /demo/sign-in in this demo) checks the password and signs the
// account ID; identify passes that token, so Seam believes the user ID (docs/identity.md).

const ACCOUNT_KEY = "demo_account";
const account = () => {
  try {
    return JSON.parse(localStorage.getItem(ACCOUNT_KEY));
  } catch {
    return null;
  }
};
if (account()) $("#account-link").textContent = "Account";

if (view === "signin") {
  page("Sign In");
  const show = () => {
    const signedIn = account();
    $("#signin-form").hidden = Boolean(signedIn);
    $("#signed-in").hidden = !signedIn;
    $("#signed-in-email").textContent = signedIn?.email ?? "";
  };
  show();
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $("#signin-status");
    const response = await fetch("/demo/sign-in", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: $("#signin-email").value, password: $("#signin-password").value, offers: $("#signin-offers").checked }),
    }).catch(() => null);
    const body = await response?.json().catch(() => null);
    if (!response?.ok || !body?.identityToken) {
      status.textContent =
        response?.status === 401 ? "Wrong email or password."
        : response?.status === 429 ? "Too many sign-in attempts. Try again in a minute."
        : "Sign-in is not available.";
      return;
    }
    identify(body.userId, { email: body.email }, { identityToken: body.identityToken });
    track("Signed In", {});
    localStorage.setItem(ACCOUNT_KEY, JSON.stringify({ userId: body.userId, email: body.email }));
    status.textContent = "";
    show();
  });
  $("#sign-out").addEventListener("click", async () => {
    track("Signed Out", {});
    await flush(); // reset() drops what is still queued
    reset();
    localStorage.removeItem(ACCOUNT_KEY);
    show();
  });
}
