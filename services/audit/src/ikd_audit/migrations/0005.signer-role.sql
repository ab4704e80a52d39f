-- The tree-head signer runs as a role of its own (<database>_signer, created with the database
-- like _owner and _app): it reads the log and adds signed tree heads, nothing else. The
-- service's runtime role can no longer add a tree head, so a compromised service cannot plant
-- one; it asks the signer process instead.
-- depends: 0004.auth-throttle

DO $$
DECLARE
    app text := current_database() || '_app';
    signer text := current_database() || '_signer';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = signer) THEN
        RAISE EXCEPTION 'role % is missing: create it with the database first '
            '(deploy/scripts/postgres.sh start, or deploy/compose/postgres-init.sh)', signer;
    END IF;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION add_tree_head(bigint, bytea, timestamptz, text, '
                   'bytea, text) FROM %I', app);
    EXECUTE format('GRANT SELECT ON log_entry, merkle_node, tree_head TO %I', signer);
    EXECUTE format('GRANT EXECUTE ON FUNCTION add_tree_head(bigint, bytea, timestamptz, text, '
                   'bytea, text) TO %I', signer);
END;
$$;
