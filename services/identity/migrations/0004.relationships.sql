-- Relationships: why an agency's service may hold a citizen (a service request named at a
-- verification, or a registration under the agency's legal duty), from when and until when.
-- Consents stay in `consents`; identity mirrors them as relationships when it publishes.
-- Every writer locks the citizen's profile row first, so that lock orders all changes here.
CREATE TABLE relationships (
    relationship_id  uuid PRIMARY KEY,
    pseudonym        text NOT NULL REFERENCES profiles (pseudonym),
    kind             text NOT NULL CHECK (kind IN ('service_request', 'registration')),
    agency           text NOT NULL,
    service          text NOT NULL,
    legal_basis      text NOT NULL CHECK (legal_basis IN ('consent', 'contract',
                         'legal_obligation', 'vital_interest', 'public_task',
                         'legitimate_interest')),
    legal_reference  text,
    starts_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL CHECK (expires_at > starts_at),
    ended_at         timestamptz,
    recorded_by      text NOT NULL,  -- the client id that started it
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- A citizen's relationships not ended (what every published record needs).
CREATE INDEX relationships_open ON relationships (pseudonym) WHERE ended_at IS NULL;

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON relationships TO %I', app);
    -- A renewal moves the expiry (and a registration's reference); an end sets ended_at.
    EXECUTE format(
        'GRANT UPDATE (expires_at, legal_reference, ended_at, updated_at) ON relationships TO %I',
        app);
END
$$;
