-- Since when an endpoint has failed without a success in between: the dispatcher disables it
-- after a configured period (IKD_GATEWAY_WEBHOOK_DISABLE_AFTER_SECONDS), logging the attempt
-- that did so with the outcome 'disabled'.
-- depends: 0003_webhook_attempt_next_retry
ALTER TABLE webhook_endpoints ADD COLUMN failing_since timestamptz;
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_outcome_check;
ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_outcome_check
    CHECK (outcome IN ('delivered', 'retry', 'dead', 'gone', 'disabled'));
