-- The agencies an officer's desk (a client with identity:consent) may record consents for.
-- Empty by default: a client serves no agency until the operator says so.
ALTER TABLE clients ADD COLUMN serves text[] NOT NULL DEFAULT '{}'
    CHECK (array_position(serves, NULL) IS NULL);
