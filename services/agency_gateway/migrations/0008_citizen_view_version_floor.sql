-- A citizen the agency held and no longer may leaves a version floor: a row with the pseudonym
-- and the last version only, so that an older version delivered again is refused, not stored
-- as new. It is the one row neither verified nor erased; these checks keep it (and an erased
-- row) free of personal data, and give a floor an end: the retention sweep deletes it at its
-- next_expiry.
-- depends: 0007_citizen_view_relationships
ALTER TABLE citizen_view ADD CONSTRAINT citizen_view_unverified_holds_nothing CHECK (
    verified_at IS NOT NULL
    OR (data = '{}'::jsonb AND expires = '{}'::jsonb AND relationships = '[]'::jsonb
        AND source_partition IS NULL AND source_offset IS NULL)
);
ALTER TABLE citizen_view ADD CONSTRAINT citizen_view_floor_ends CHECK (
    verified_at IS NOT NULL OR erased OR next_expiry IS NOT NULL
);
