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

export const byId = (id) => products.find((p) => p.product_id === id);
