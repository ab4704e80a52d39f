-- The agency's minimised view, consents, idempotency record, access outbox and webhooks.
-- depends:

CREATE TABLE citizen_view (
    pseudonym text PRIMARY KEY,
    version bigint NOT NULL,
    data jsonb NOT NULL,                 -- granted fields only: {"full_name": ..., "address.rt": ...}
    expires jsonb NOT NULL,              -- {field: purge time (ISO 8601)}
    next_expiry timestamptz,             -- earliest of `expires`; the retention sweep uses it
    verified_at timestamptz,
    erased boolean NOT NULL DEFAULT false,
    source_partition integer,            -- where the stored version sits on the profile topic
    source_offset bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX citizen_view_next_expiry ON citizen_view (next_expiry) WHERE next_expiry IS NOT NULL;

CREATE TABLE citizen_consents (
    pseudonym text PRIMARY KEY,
    consents_version bigint NOT NULL,
    consents jsonb NOT NULL,             -- this agency's active consent artefacts only
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE processed_events (
    consumer text NOT NULL,
    event_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE access_outbox (
    position bigserial PRIMARY KEY,
    access_id uuid NOT NULL UNIQUE,
    record_key text NOT NULL,
    payload jsonb NOT NULL,              -- AccessRecorded (field names, never values)
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    service text NOT NULL,
    description text,
    secret text NOT NULL,                -- whsec_...; the gateway needs it to sign
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_messages (
    id uuid PRIMARY KEY,                 -- the webhook-id header; the same on every retry
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id),
    pseudonym text NOT NULL,
    version bigint NOT NULL,
    event_type text NOT NULL,
    changed_fields jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'dead', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_pseudonym ON webhook_messages (pseudonym) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id bigserial PRIMARY KEY,
    message_id uuid NOT NULL REFERENCES webhook_messages (id),
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id),
    attempt integer NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error text,
    duration_ms double precision NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead', 'gone'))
);
CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id);

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON citizen_view, citizen_consents,
                    access_outbox, webhook_messages TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON processed_events TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON webhook_endpoints TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT ON webhook_attempts TO %I', app);
    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE access_outbox_position_seq,
                    webhook_attempts_id_seq TO %I', app);
END $$;
