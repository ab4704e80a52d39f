-- A rotated client secret: the previous one keeps working until a stated time, so the client's
-- deployments can switch over without a gap (`ikd-identity clients rotate-secret --grace-...`).
-- Both columns or neither; the runtime role reads them with the rest of the table.
ALTER TABLE clients
    ADD COLUMN previous_secret_hash text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD CONSTRAINT clients_previous_secret_complete
        CHECK ((previous_secret_hash IS NULL) = (previous_secret_expires_at IS NULL));
