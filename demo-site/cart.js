// The shopper's cart, kept in localStorage (`demo_cart`: lines `{product_id, quantity}`) so it
// survives navigation and is shared by tabs. It is the shop's own functional storage, needed to
// sell anything, so it does not wait for consent (the analytics ID does: that is the SDK's job).
import { byId } from "./products.js";

export const CART_KEY = "demo_cart";
export const CART_ID = "demo-cart"; // one cart per browser: the `cart_id` of the e-commerce events

/** The cart's lines with their products, `[{ product, quantity }]`; unknown products are skipped. */
export function cartLines() {
  let stored;
  try {
    stored = JSON.parse(localStorage.getItem(CART_KEY));
  } catch {
    stored = null; // hand-edited or corrupt: start over rather than break the page
  }
  if (!Array.isArray(stored)) return [];
  return stored
    .map((line) => ({ product: byId(line?.product_id), quantity: Math.max(1, Math.floor(line?.quantity) || 1) }))
    .filter((line) => line.product);
}

function save(lines) {
  const stored = lines.map(({ product, quantity }) => ({ product_id: product.product_id, quantity }));
  localStorage.setItem(CART_KEY, JSON.stringify(stored));
}

export function addToCart(product) {
  const lines = cartLines();
  const line = lines.find((l) => l.product === product);
  if (line) line.quantity += 1;
  else lines.push({ product, quantity: 1 });
  save(lines);
}

export function removeFromCart(product) {
  save(cartLines().filter((l) => l.product !== product));
}

export function clearCart() {
  localStorage.removeItem(CART_KEY);
}

/** Money in euros, rounded to cents (prices are whole cents; discounts are not). */
export const cents = (amount) => Math.round(amount * 100) / 100;

export const subtotal = (lines) => cents(lines.reduce((sum, l) => sum + l.product.price * l.quantity, 0));
