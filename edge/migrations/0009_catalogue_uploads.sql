-- Uploaded catalogue rows are the site owner's word: events (a browser's claim) may fill fields
-- an upload left unset, never replace it (core::personalise::recommend::catalog).
ALTER TABLE catalog_items ADD COLUMN uploaded INTEGER NOT NULL DEFAULT 0;
