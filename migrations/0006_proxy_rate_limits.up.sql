-- The IRIS API proxy's GraphQL holds: after Trackunit answered RATE_LIMITED
-- for an install, every replica answers that install's GraphQL calls 429
-- until reset_at, without calling Trackunit. One row per install, upserted;
-- a row whose reset_at has passed is simply ignored.
CREATE TABLE proxy_rate_limits (
    iris_app_id text        NOT NULL,
    account_id  text        NOT NULL,
    reset_at    timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (iris_app_id, account_id)
);
