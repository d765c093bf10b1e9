-- Consent choices recorded per UTC day (epoch day), Consent Mode purpose and value, counted in
-- the batch that records them (core::privacy::record_consent): the console's consent rates.
CREATE TABLE consent_counts (
  day     INTEGER NOT NULL,
  purpose TEXT    NOT NULL, -- analytics_storage, ad_storage, ad_user_data, ...
  value   TEXT    NOT NULL, -- granted | denied
  count   INTEGER NOT NULL,
  PRIMARY KEY (day, purpose, value)
) WITHOUT ROWID;
