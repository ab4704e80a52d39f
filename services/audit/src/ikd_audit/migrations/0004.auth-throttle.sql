-- Failed console sign-ins, per (auditor id, address) and per address, shared by every replica
-- (ikd_shared.throttle). `tat` is the key's GCRA theoretical arrival time; a row whose tat has
-- passed is the same as none. The runtime role counts and gives back (SELECT, INSERT, UPDATE)
-- and may only prune through prune_auth_throttle(), which removes passed rows and nothing else.
-- depends: 0003.checkpoints-and-append-functions

CREATE TABLE auth_throttle (
    kind       text NOT NULL CHECK (kind IN ('address', 'principal')),
    address    text NOT NULL,
    principal  text NOT NULL,
    tat        timestamptz NOT NULL,
    PRIMARY KEY (kind, address, principal)
);
CREATE INDEX auth_throttle_tat ON auth_throttle (tat);

CREATE FUNCTION prune_auth_throttle() RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM public.auth_throttle WHERE tat < now() RETURNING 1
    )
    SELECT count(*) FROM gone;
$$;

REVOKE ALL ON auth_throttle FROM PUBLIC;
REVOKE ALL ON FUNCTION prune_auth_throttle() FROM PUBLIC;

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON auth_throttle TO %I', app);
    EXECUTE format('GRANT EXECUTE ON FUNCTION prune_auth_throttle() TO %I', app);
END;
$$;
