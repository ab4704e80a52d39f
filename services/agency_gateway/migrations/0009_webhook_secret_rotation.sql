-- A webhook secret rotation keeps the replaced secret for a grace period: deliveries are signed
-- with both until it ends (Standard Webhooks' several signatures), so a receiver can switch
-- secrets without rejecting a delivery. Kept like the current secret, which the gateway needs
-- to sign; both columns are null or both set.
-- depends: 0008_citizen_view_version_floor
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD CONSTRAINT webhook_endpoints_previous_secret_pair
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));
