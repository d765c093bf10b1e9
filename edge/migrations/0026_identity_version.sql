-- An assignment's version is the highest link `seq` it was computed from and, since the
-- identity graph's links can live in the profile shards (docs/scale.md), the sum of those
-- `seq`s too: over several databases a component's load is a walk that can see a link before
-- an older one has landed, and the sum tells that view from the whole one
-- (core::identity::graph_plan::Version). Rows written before count as a sum of 0: any
-- computation that saw as much wins over them, as it did.
ALTER TABLE identities ADD COLUMN seq_sum INTEGER NOT NULL DEFAULT 0;
