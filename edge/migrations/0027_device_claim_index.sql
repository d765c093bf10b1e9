-- An erasure takes the person's device IDs out of other people's events, where a browser named
-- them as a claim (core::privacy::erase, "redactedClaims"), as it does their emails and phones
-- (0019). The index holds only events that carry a device ID, keyed by the value as erasure
-- matches it; the expression must stay exactly core::privacy's DEVICE_VALUE (a unit test
-- checks). Creating it reads every hot event's body once.
CREATE INDEX events_context_device ON events (trim(CAST(json_extract(body, '$.context.device.id') AS TEXT)))
  WHERE json_extract(body, '$.context.device.id') IS NOT NULL;
