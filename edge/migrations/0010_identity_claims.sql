-- Identifiers a link only claims (a browser's anonymous and device IDs), as a JSON array of
-- text forms; NULL when the link proves everything it carries (server sources, and every link
-- stored before identity verification). See core/src/identity/resolve.rs (`unproven`).
ALTER TABLE identity_links ADD COLUMN claimed TEXT;
