// The demo shop's analytics: everything goes through the @seam/sdk npm package.
import { consent, load, page, track } from "@seam/sdk";
import { products, byId } from "./products.js";

const CONSENT_KEY = "demo_consent"; // the site's own record of the visitor's choice

// The site's gtag, as Google's snippet defines it: commands go onto window.dataLayer, where the
// SDK reads them (also those pushed before it loaded).
window.dataLayer = window.dataLayer || [];
function gtag() {
  window.dataLayer.push(arguments);
}

// Consent Mode v2: everything denied until the visitor chooses (a CMP, if the page has one,
// answers through __tcfapi and the SDK listens to it too).
gtag("consent", "default", { analytics_storage: "denied", ad_storage: "denied", ad_user_data: "denied", ad_personalization: "denied" });
load({ writeKey: "seam_dev_write_key", flushInterval: 2000 });
const choice = localStorage.getItem(CONSENT_KEY);
if (choice) consent.update({ analytics_storage: choice });

// Consent banner: shown until the visitor chooses; the choice goes out as a gtag update.
const banner = document.querySelector("#consent");
if (banner && !choice && !window.__tcfapi) banner.hidden = false;
for (const button of document.querySelectorAll("[data-consent]")) {
  button.addEventListener("click", () => {
    localStorage.setItem(CONSENT_KEY, button.dataset.consent);
    gtag("consent", "update", { analytics_storage: button.dataset.consent });
    banner.hidden = true;
  });
}

const view = document.body.dataset.view;
if (view === "home") {
  page("Home");
  const list = document.querySelector("#products");
  for (const p of products) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/product?id=${encodeURIComponent(p.product_id)}`;
    link.textContent = p.name;
    link.addEventListener("click", () => track("Product Clicked", p));
    item.append(link, ` · ${p.category} · €${p.price.toFixed(2)}`);
    list.append(item);
  }
  track("Product List Viewed", { list_id: "home", products: products.map(({ product_id }) => ({ product_id })) });
}

if (view === "product") {
  const product = byId(new URLSearchParams(location.search).get("id")) ?? products[0];
  document.title = `${product.name} · Seam Shop`;
  document.querySelector("#name").textContent = product.name;
  document.querySelector("#meta").textContent = `${product.brand} · ${product.category} · €${product.price.toFixed(2)}`;
  page("Product", { product_id: product.product_id });
  track("Product Viewed", product);
  const add = document.querySelector("#add-to-cart");
  add.addEventListener("click", () => {
    track("Product Added", { ...product, quantity: 1, cart_id: "demo-cart" });
    document.querySelector("#status").textContent = "Added to cart.";
  });
}
