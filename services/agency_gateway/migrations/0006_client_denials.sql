-- Denials of the API's clients, counted per client id so that a client this gateway keeps
-- denying is throttled (429) by every API replica alike; see domain/throttle.py.
-- depends: 0005_agency_topic_outbox
CREATE TABLE client_denials (
    client_id text PRIMARY KEY,          -- the token's subject: a registered client, never a guess
    window_started_at timestamptz NOT NULL,
    denials integer NOT NULL CHECK (denials >= 0),
    blocked_until timestamptz,           -- refused until then
    block_audited boolean NOT NULL DEFAULT false,  -- the block's first refusal was audited
    updated_at timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON client_denials TO %I', app);
END $$;
