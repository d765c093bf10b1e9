-- Journeys (core::journey, edge/src/jobs/journeys.rs): one row per entry of a person into a
-- journey. The one-minute cron walks active rows whose `next_at` has come; the walk (a pure
-- function of the person's facts) says which sends are due and when to look again.
CREATE TABLE journey_runs (
  journey    TEXT    NOT NULL,
  profile_id TEXT    NOT NULL, -- the person now (a merge moves the run to the survivor)
  key_profile TEXT   NOT NULL, -- the profile at entry: send keys and the holdout derive from it
  entered_at INTEGER NOT NULL, -- epoch ms, the collector's clock
  status     TEXT    NOT NULL, -- 'active' | 'ended'
  next_at    INTEGER,          -- active: when to walk again (or a walker's lease)
  step       TEXT,             -- active: the step it waits at; ended: where it ended
  end_reason TEXT,             -- completed | exit_event | branched_out | suppressed | erased
  ended_at   INTEGER,
  control    INTEGER NOT NULL DEFAULT 0, -- in the holdout group
  cause      TEXT,             -- segment:<name> or event:<name>
  trigger_event TEXT,          -- an event trigger's event as stored (templates' {{event.…}})
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (journey, profile_id, entered_at)
) WITHOUT ROWID;

-- Nobody is in the same journey twice at once, whatever races.
CREATE UNIQUE INDEX journey_runs_active ON journey_runs (journey, profile_id) WHERE status = 'active';
CREATE INDEX journey_runs_due ON journey_runs (status, next_at);
CREATE INDEX journey_runs_by_profile ON journey_runs (profile_id);
-- Retention's question: which runs ended long ago?
CREATE INDEX journey_runs_ended ON journey_runs (ended_at) WHERE status = 'ended';

-- Every send decision by its key (core::journey::send_key), made once: `sent` (a delivery row
-- under source '$journey' carries the message) or why not (holdout, no_consent, frequency_cap,
-- unsubscribed, no_contact, no_template, no_destination); and every branch judged
-- (branch_held, branch_not_held). A later walk acts only on keys not decided here.
CREATE TABLE journey_decisions (
  key         TEXT    NOT NULL PRIMARY KEY,
  journey     TEXT    NOT NULL,
  profile_id  TEXT    NOT NULL,
  entered_at  INTEGER NOT NULL,
  step        TEXT    NOT NULL,
  destination TEXT,
  outcome     TEXT    NOT NULL,
  at          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX journey_decisions_by_profile ON journey_decisions (profile_id, at);
CREATE INDEX journey_decisions_by_journey ON journey_decisions (journey, at);
CREATE INDEX journey_decisions_by_at ON journey_decisions (at);
