-- A keyed audit chain: each entry names its hash scheme and the key that signed it.
-- scheme NULL is the unkeyed sha256 of earlier versions, still verified as such;
-- 'hmac-sha256' entries are HMAC-SHA256 with a key derived from the stack's secret.
ALTER TABLE audit_log ADD COLUMN scheme TEXT;
ALTER TABLE audit_log ADD COLUMN key_id TEXT;
-- Decisions are looked up by kind (the governance applied by `mlplat up`, the latest deployment).
CREATE INDEX IF NOT EXISTS audit_by_action ON audit_log (action, seq);
