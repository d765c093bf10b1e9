-- An erasure removes the person's email and phone from other people's events, where a browser
-- claimed them (core::privacy::erase, "redactedClaims"). Without these indexes that is four
-- reads of every event body (8 s at a million events, past D1's limit at a few million). Each
-- index holds only the events that carry the field, keyed by the value normalised as a contact
-- (an email if it holds an '@', else a phone), whichever field it was typed into. The
-- expressions must stay exactly those core::privacy builds (a unit test checks). Creating them
-- reads every event body once; each insert evaluates the four conditions.
CREATE INDEX events_traits_email ON events (CASE WHEN instr(CAST(json_extract(body, '$.traits.email') AS TEXT), '@') > 0 THEN lower(trim(CAST(json_extract(body, '$.traits.email') AS TEXT))) ELSE lower(replace(replace(replace(replace(replace(trim(CAST(json_extract(body, '$.traits.email') AS TEXT)), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '')) END)
  WHERE json_extract(body, '$.traits.email') IS NOT NULL;
CREATE INDEX events_context_traits_email ON events (CASE WHEN instr(CAST(json_extract(body, '$.context.traits.email') AS TEXT), '@') > 0 THEN lower(trim(CAST(json_extract(body, '$.context.traits.email') AS TEXT))) ELSE lower(replace(replace(replace(replace(replace(trim(CAST(json_extract(body, '$.context.traits.email') AS TEXT)), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '')) END)
  WHERE json_extract(body, '$.context.traits.email') IS NOT NULL;
CREATE INDEX events_traits_phone ON events (CASE WHEN instr(CAST(json_extract(body, '$.traits.phone') AS TEXT), '@') > 0 THEN lower(trim(CAST(json_extract(body, '$.traits.phone') AS TEXT))) ELSE lower(replace(replace(replace(replace(replace(trim(CAST(json_extract(body, '$.traits.phone') AS TEXT)), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '')) END)
  WHERE json_extract(body, '$.traits.phone') IS NOT NULL;
CREATE INDEX events_context_traits_phone ON events (CASE WHEN instr(CAST(json_extract(body, '$.context.traits.phone') AS TEXT), '@') > 0 THEN lower(trim(CAST(json_extract(body, '$.context.traits.phone') AS TEXT))) ELSE lower(replace(replace(replace(replace(replace(trim(CAST(json_extract(body, '$.context.traits.phone') AS TEXT)), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '')) END)
  WHERE json_extract(body, '$.context.traits.phone') IS NOT NULL;
