-- Captures are keyed by the request id the gateway generates for every request, so two clients that
-- pick the same x-request-id cannot drop each other's capture. The caller's own id (x-request-id, or a
-- v2 request's "id") is kept here for correlation; labels may name either id.
ALTER TABLE captures ADD COLUMN client_request_id TEXT;
CREATE INDEX IF NOT EXISTS captures_by_client_id ON captures (client_request_id) WHERE client_request_id IS NOT NULL;
