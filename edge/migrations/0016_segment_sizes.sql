-- Segment sizes per UTC day (epoch day), recorded by the segment sweep (every five minutes:
-- the day's row holds its latest count): the console's size-over-time chart.
CREATE TABLE segment_sizes (
  day     INTEGER NOT NULL,
  segment TEXT    NOT NULL,
  size    INTEGER NOT NULL,
  PRIMARY KEY (day, segment)
) WITHOUT ROWID;
