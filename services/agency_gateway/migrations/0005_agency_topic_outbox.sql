-- The agency topic (ikd.agency.<code>.v1): records queued in the transaction that changed the
-- view, published in order by the worker's relay and deleted once the broker acknowledged them;
-- and, per citizen, a digest of what the topic says, to publish only real changes.
-- depends: 0004_webhook_endpoint_failing_since
CREATE TABLE agency_outbox (
    position bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,       -- the CloudEvent id; agency consumers deduplicate by it
    record_key text NOT NULL,            -- the citizen pseudonym
    ce_type text NOT NULL,
    data bytea,                          -- the AgencyRecordChanged JSON; NULL for a tombstone
    traceparent text,
    tracestate text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agency_disclosed (
    pseudonym text PRIMARY KEY,
    fingerprint jsonb NOT NULL,          -- {service: {field: sha256 of the value}}, no values
    updated_at timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON agency_outbox, agency_disclosed TO %I',
                   app);
    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE agency_outbox_position_seq TO %I', app);
END $$;
