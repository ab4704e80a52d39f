-- When each retried attempt scheduled the next one, and an index for an endpoint's delivery log
-- newest first (GET /v1/webhooks/endpoints/{id}/deliveries).
-- depends: 0002_access_outbox_trace_context
ALTER TABLE webhook_attempts ADD COLUMN next_retry_at timestamptz;
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id DESC);
