-- The append-only access log, its Merkle tree state and signed tree heads.
-- depends:

CREATE TABLE log_entry (
    position     bigint PRIMARY KEY CHECK (position >= 0),
    access_id    uuid NOT NULL UNIQUE,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    agency       text NOT NULL,
    service      text,
    pseudonym    text,
    fields       text[] NOT NULL,
    purpose      text,
    legal_basis  text,
    channel      text NOT NULL,
    outcome      text NOT NULL,
    reason       text,
    leaf_hash    bytea NOT NULL CHECK (octet_length(leaf_hash) = 32)
);
CREATE INDEX log_entry_pseudonym ON log_entry (pseudonym, position);
CREATE INDEX log_entry_agency ON log_entry (agency, position);
CREATE INDEX log_entry_occurred_at ON log_entry (occurred_at);

-- Hashes of perfect subtrees (level >= 1; leaves are log_entry.leaf_hash), written once.
CREATE TABLE merkle_node (
    level  smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx    bigint NOT NULL CHECK (idx >= 0),
    hash   bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE tree_head (
    tree_size  bigint PRIMARY KEY CHECK (tree_size >= 0),
    root_hash  bytea NOT NULL CHECK (octet_length(root_hash) = 32),
    signed_at  timestamptz NOT NULL,
    key_id     text NOT NULL,
    signature  bytea NOT NULL
);

-- IKD credentials already used for a citizen trail request (replay protection).
CREATE TABLE seen_credential (
    jti         text PRIMARY KEY,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Console sign-in for auditors: client id and an argon2 hash of the secret.
CREATE TABLE auditor (
    client_id    text PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._-]{3,64}$'),
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled     boolean NOT NULL DEFAULT false
);

CREATE FUNCTION refuse_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER log_entry_append_only BEFORE UPDATE OR DELETE ON log_entry
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER log_entry_no_truncate BEFORE TRUNCATE ON log_entry
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER merkle_node_append_only BEFORE UPDATE OR DELETE ON merkle_node
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER merkle_node_no_truncate BEFORE TRUNCATE ON merkle_node
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER tree_head_append_only BEFORE UPDATE OR DELETE ON tree_head
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER tree_head_no_truncate BEFORE TRUNCATE ON tree_head
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();

REVOKE ALL ON log_entry, merkle_node, tree_head, seen_credential, auditor
    FROM PUBLIC;

DO $$
DECLARE app text := current_database() || '_app';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON log_entry, merkle_node, tree_head TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT ON seen_credential TO %I', app);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON auditor TO %I', app);
END;
$$;
