-- Consent per profile and purpose (domain/consent.py): the latest Consent Changed decision of each purpose the
-- person decided on, over every identifier the profile holds, recomputed with the profile like every computed
-- trait. Tag rules and segments read it (with the workspace's defaults for the purposes not in it); the whole
-- decision (when, which event) is in `doc`. Profiles written before this migration get it at their next
-- recompute, or all at once with `cdp rebuild`.
ALTER TABLE {db}.profiles ADD COLUMN IF NOT EXISTS consent Map(String, UInt8) COMMENT 'purpose → 1 granted, 0 withdrawn; purposes never decided on are absent (the workspace default applies)' AFTER average_csat;
