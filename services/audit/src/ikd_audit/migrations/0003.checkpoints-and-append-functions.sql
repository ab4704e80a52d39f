-- Checkpoints (C2SP signed notes) beside the signed tree heads, the witnesses' cosignatures,
-- and appends only through functions: the runtime role loses INSERT on the log's tables, so it
-- can neither leave a gap nor plant a tree node ahead of the leaves it belongs to.
-- depends: 0002.prune-seen-credential

-- The checkpoint note the signer signed with the tree head; NULL on heads signed before.
ALTER TABLE tree_head ADD COLUMN checkpoint text;

-- Public inclusion proofs are asked for by leaf hash.
CREATE INDEX log_entry_leaf_hash ON log_entry (leaf_hash);

-- Cosignatures (c2sp.org/tlog-cosignature) witnesses returned for a checkpoint. A row is only
-- stored once the line verified against a configured witness key; written once, never changed.
CREATE TABLE cosignature (
    tree_size    bigint NOT NULL REFERENCES tree_head (tree_size),
    witness      text NOT NULL,
    key_id       bigint NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    cosigned_at  timestamptz NOT NULL,
    line         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tree_size, witness, key_id)
);
CREATE TRIGGER cosignature_append_only BEFORE UPDATE OR DELETE ON cosignature
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER cosignature_no_truncate BEFORE TRUNCATE ON cosignature
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();

-- Entries at the next positions with the perfect subtrees they complete. Positions must follow
-- the log's end without a gap, and every node must lie inside the appended range; a taken
-- position, access id or node raises (nothing is overwritten) and the caller's batch rolls back.
CREATE FUNCTION append_log(
    positions bigint[], access_ids uuid[], occurred timestamptz[], recorded timestamptz[],
    agencies text[], services text[], pseudonyms text[], field_lists text[], purposes text[],
    legal_bases text[], channels text[], outcomes text[], reasons text[], leaf_hashes bytea[],
    node_levels smallint[], node_idxs bigint[], node_hashes bytea[]
) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    first bigint;
    last bigint;
    n bigint := coalesce(cardinality(positions), 0);
BEGIN
    IF n = 0 THEN
        RETURN 0;
    END IF;
    SELECT coalesce(max(position) + 1, 0) INTO first FROM public.log_entry;
    last := first + n - 1;
    IF EXISTS (
        SELECT 1 FROM unnest(positions) WITH ORDINALITY AS t(pos, i) WHERE pos <> first + i - 1
    ) THEN
        RAISE EXCEPTION 'entries must continue the log at position %', first
            USING ERRCODE = 'check_violation';
    END IF;
    -- node (level, idx) covers leaves idx * 2^level .. (idx + 1) * 2^level - 1: its last leaf
    -- is one of the new ones
    IF EXISTS (
        SELECT 1 FROM unnest(node_levels, node_idxs) AS t(level, idx)
        WHERE level < 1 OR level > 62
           OR (idx + 1) * (1::bigint << level) - 1 NOT BETWEEN first AND last
    ) THEN
        RAISE EXCEPTION 'a tree node outside the appended entries' USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO public.log_entry (
        position, access_id, occurred_at, recorded_at, agency, service, pseudonym, fields,
        purpose, legal_basis, channel, outcome, reason, leaf_hash
    )
    SELECT p, a, o, r, ag, s, ps, ARRAY(SELECT jsonb_array_elements_text(f::jsonb)),
           pu, lb, c, oc, re, lh
    FROM unnest(positions, access_ids, occurred, recorded, agencies, services, pseudonyms,
                field_lists, purposes, legal_bases, channels, outcomes, reasons, leaf_hashes)
        AS t(p, a, o, r, ag, s, ps, f, pu, lb, c, oc, re, lh);
    INSERT INTO public.merkle_node (level, idx, hash)
    SELECT * FROM unnest(node_levels, node_idxs, node_hashes);
    RETURN n;
END;
$$;

-- A signed tree head: a size already signed keeps its head (nothing is overwritten).
CREATE FUNCTION add_tree_head(
    size bigint, root bytea, signed timestamptz, kid text, sig bytea, note text
) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH added AS (
        INSERT INTO public.tree_head (tree_size, root_hash, signed_at, key_id, signature, checkpoint)
        VALUES (size, root, signed, kid, sig, note)
        ON CONFLICT (tree_size) DO NOTHING
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM added);
$$;

REVOKE ALL ON cosignature FROM PUBLIC;
REVOKE ALL ON FUNCTION append_log(
    bigint[], uuid[], timestamptz[], timestamptz[], text[], text[], text[], text[], text[],
    text[], text[], text[], text[], bytea[], smallint[], bigint[], bytea[]
) FROM PUBLIC;
REVOKE ALL ON FUNCTION add_tree_head(bigint, bytea, timestamptz, text, bytea, text) FROM PUBLIC;

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON log_entry, merkle_node, tree_head '
                   'FROM %I', app);
    EXECUTE format('GRANT SELECT, INSERT ON cosignature TO %I', app);
    EXECUTE format('GRANT EXECUTE ON FUNCTION append_log(bigint[], uuid[], timestamptz[], '
                   'timestamptz[], text[], text[], text[], text[], text[], text[], text[], '
                   'text[], text[], bytea[], smallint[], bigint[], bytea[]) TO %I', app);
    EXECUTE format('GRANT EXECUTE ON FUNCTION add_tree_head(bigint, bytea, timestamptz, text, '
                   'bytea, text) TO %I', app);
END;
$$;
