-- Pruning replay-protection rows of long-expired credentials. The runtime role may not DELETE
-- from seen_credential; it may only call this function, which removes nothing that has not
-- been expired for at least `grace` (negative grace counts as zero). The log stays untouched.
-- depends: 0001.audit-log

CREATE FUNCTION prune_seen_credential(grace interval) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM public.seen_credential
        WHERE expires_at < now() - greatest(grace, interval '0')
        RETURNING 1
    )
    SELECT count(*) FROM gone;
$$;

CREATE INDEX seen_credential_expires_at ON seen_credential (expires_at);

REVOKE ALL ON FUNCTION prune_seen_credential(interval) FROM PUBLIC;

DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION prune_seen_credential(interval) TO %I',
                   current_database() || '_app');
END;
$$;
