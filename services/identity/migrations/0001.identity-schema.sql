-- Identity service schema: canonical profiles, seen credentials, consents, outbox, API clients.
-- Created by the owner role; the runtime role <database>_app gets only what it needs.

CREATE TABLE profiles (
    pseudonym    text PRIMARY KEY CHECK (pseudonym ~ '^[0-9a-f]{64}$'),
    nik          char(16) NOT NULL UNIQUE,
    version      integer NOT NULL CHECK (version >= 1),
    status       text NOT NULL CHECK (status IN ('active', 'deceased', 'revoked')),
    profile      jsonb NOT NULL,
    verified_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

-- A credential id (jti) is accepted once; kept until long after the credential expired.
CREATE TABLE seen_credentials (
    jti         text PRIMARY KEY,
    pseudonym   text NOT NULL,
    expires_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE consents (
    consent_id   uuid PRIMARY KEY,
    pseudonym    text NOT NULL,
    agency       text NOT NULL,
    service      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('active', 'revoked', 'expired')),
    starts_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL CHECK (expires_at > starts_at),
    consent      jsonb NOT NULL,
    recorded_by  text NOT NULL,  -- 'citizen' or the officer's client id
    revoked_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consents_by_citizen ON consents (pseudonym, status);

-- Per-citizen consent set version: grows by one with every grant or revocation.
CREATE TABLE consent_versions (
    pseudonym  text PRIMARY KEY,
    version    integer NOT NULL CHECK (version >= 1)
);

-- Transactional outbox: rows are written with the state change and relayed in position order.
CREATE TABLE outbox (
    position    bigserial PRIMARY KEY,
    event_id    uuid NOT NULL UNIQUE,
    topic       text NOT NULL,
    key         text NOT NULL,
    ce_type     text NOT NULL,
    ce_source   text NOT NULL,
    dataschema  text,
    payload     bytea,
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (position) WHERE sent_at IS NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ikd_identity_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE clients (
    client_id    text PRIMARY KEY CHECK (client_id ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
    secret_hash  text NOT NULL,
    scopes       text[] NOT NULL,
    agency       text,
    disabled     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON profiles TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT ON seen_credentials TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON consents, consent_versions TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT ON outbox TO %I', app);
    EXECUTE format('GRANT UPDATE (sent_at) ON outbox TO %I', app);
    EXECUTE format('GRANT USAGE ON SEQUENCE outbox_position_seq TO %I', app);
    EXECUTE format('GRANT SELECT ON clients TO %I', app);
END
$$;
