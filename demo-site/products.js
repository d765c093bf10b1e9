// The demo shop's catalogue: 12 products in 3 categories. Property names follow Segment's
// e-commerce spec (they are sent as-is with Product Viewed / Product Added, which also feeds the
// edge's catalogue and recommendations).
const item = (product_id, sku, name, category, brand, price) => ({
  product_id,
  sku,
  name,
  category,
  brand,
  price,
  url: `/product.html?id=${product_id}`,
  image_url: `/img/${product_id}.svg`,
});

export const products = [
  item("trail-runner", "SH-TR-01", "Trail Runner", "Running Shoes", "Fjell", 129.0),
  item("road-racer", "SH-RR-02", "Road Racer", "Running Shoes", "Vento", 149.0),
  item("tempo-trainer", "SH-TT-07", "Tempo Trainer", "Running Shoes", "Vento", 119.0),
  item("ultra-cushion", "SH-UC-08", "Ultra Cushion", "Running Shoes", "Fjell", 169.0),
  item("merino-tee", "AP-MT-03", "Merino Tee", "Apparel", "Fjell", 59.0),
  item("wind-shell", "AP-WS-04", "Wind Shell", "Apparel", "Vento", 99.0),
  item("thermal-tights", "AP-TT-09", "Thermal Tights", "Apparel", "Lumo", 69.0),
  item("race-singlet", "AP-RS-10", "Race Singlet", "Apparel", "Vento", 39.0),
  item("hydration-vest", "AC-HV-05", "Hydration Vest", "Accessories", "Fjell", 79.0),
  item("head-torch", "AC-HT-06", "Head Torch", "Accessories", "Lumo", 45.0),
  item("running-socks", "AC-RS-11", "Cushioned Running Socks", "Accessories", "Fjell", 15.0),
  item("gps-watch", "AC-GW-12", "GPS Watch", "Accessories", "Lumo", 249.0),
];

// Shown on the product page only; kept out of the product objects so events stay small.
export const descriptions = {
  "trail-runner": "Grippy lugs, a rock plate and a snug heel for muddy, rooty singletrack.",
  "road-racer": "A light, springy racer with a carbon plate for fast days on tarmac.",
  "tempo-trainer": "Responsive foam for intervals and tempo runs, durable enough for daily miles.",
  "ultra-cushion": "Maximal cushioning that stays soft from the first kilometre to the last.",
  "merino-tee": "Soft merino wool that keeps you warm when wet and fresh for days.",
  "wind-shell": "A featherweight shell that packs into its own pocket and shrugs off gusts.",
  "thermal-tights": "Brushed-back tights with reflective details for cold, dark runs.",
  "race-singlet": "A barely-there mesh singlet, cut for race day and hot summer sessions.",
  "hydration-vest": "Two soft flasks up front and room for a jacket: bounce-free on long runs.",
  "head-torch": "400 lumens, a rechargeable battery and a comfortable band for night runs.",
  "running-socks": "Padded heel and toe, arch support and no seams to rub.",
  "gps-watch": "Multi-band GPS, heart rate and 30 hours of battery for training and racing.",
};

export const byId = (id) => products.find((p) => p.product_id === id);
