// The demo shop's catalogue. Property names follow Segment's e-commerce spec.
export const products = [
  { product_id: "trail-runner", sku: "SH-TR-01", name: "Trail Runner", category: "Running Shoes", brand: "Fjell", price: 129.0 },
  { product_id: "road-racer", sku: "SH-RR-02", name: "Road Racer", category: "Running Shoes", brand: "Vento", price: 149.0 },
  { product_id: "merino-tee", sku: "AP-MT-03", name: "Merino Tee", category: "Apparel", brand: "Fjell", price: 59.0 },
  { product_id: "wind-shell", sku: "AP-WS-04", name: "Wind Shell", category: "Apparel", brand: "Vento", price: 99.0 },
  { product_id: "hydration-vest", sku: "AC-HV-05", name: "Hydration Vest", category: "Accessories", brand: "Fjell", price: 79.0 },
  { product_id: "head-torch", sku: "AC-HT-06", name: "Head Torch", category: "Accessories", brand: "Lumo", price: 45.0 },
];

export const byId = (id) => products.find((p) => p.product_id === id);
