-- When the segment sweep (cron) should look at a profile again: the first instant its memberships
-- can change with no new event (a cart-abandon window passing, a view leaving a 30-day window).
-- NULL: time alone changes nothing. Written with every state save (core::personalise::next_check).
ALTER TABLE profile_personalisation ADD COLUMN check_at INTEGER;
CREATE INDEX profile_personalisation_due ON profile_personalisation (check_at) WHERE check_at IS NOT NULL;
