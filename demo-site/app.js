// The demo shop's analytics: everything goes through the @seam/sdk npm package.
import { load, page, track } from "@seam/sdk";
import { products, byId } from "./products.js";

const CONSENT_KEY = "demo_consent"; // the site's own record of the visitor's choice

function consent() {
  return localStorage.getItem(CONSENT_KEY) === "granted" ? "granted" : "denied";
}

load({ writeKey: "seam_dev_write_key", flushInterval: 2000, consent: { analytics_storage: consent() } });

// Consent banner: shown until the visitor chooses.
const banner = document.querySelector("#consent");
if (banner && !localStorage.getItem(CONSENT_KEY)) banner.hidden = false;
for (const button of document.querySelectorAll("[data-consent]")) {
  button.addEventListener("click", () => {
    localStorage.setItem(CONSENT_KEY, button.dataset.consent);
    load({ writeKey: "seam_dev_write_key", consent: { analytics_storage: consent() } });
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
