-- The shape of recent identity tokens and install callbacks, for the admin
-- page's "Identity and callbacks seen" view. Never holds a token, a
-- signature, a claim value other than iss and aud, or a body field value:
-- only names, the header's alg/kid/typ and two durations. Every text is
-- already cut and escaped by the broker. Kept small: each insert prunes its
-- verdict to the newest rows (store.MaxIdentityProfiles), so refused tokens
-- from an attacker cannot push the accepted ones out.
CREATE TABLE identity_profiles (
    id             bigserial PRIMARY KEY,
    seen_at        timestamptz NOT NULL,
    verdict        text NOT NULL CHECK (verdict IN ('accepted', 'refused')),
    rule           text NOT NULL DEFAULT '',
    alg            text NOT NULL DEFAULT '',
    kid            text NOT NULL DEFAULT '',
    typ            text NOT NULL DEFAULT '',
    iss            text NOT NULL DEFAULT '',
    aud            text[] NOT NULL DEFAULT '{}',
    claims         text[] NOT NULL DEFAULT '{}',
    claim_count    integer NOT NULL DEFAULT 0,
    -- now - iat and exp - iat in milliseconds; NULL without a numeric iat/exp.
    age_ms         bigint,
    lifetime_ms    bigint,
    -- Names of callback body fields the broker does not know; NULL when the
    -- body was not looked at (the token was refused first).
    unknown_fields text[]
);

-- Newest first per verdict: the view's reads and the prune on insert.
CREATE INDEX identity_profiles_verdict_idx ON identity_profiles (verdict, id DESC);

-- The event log records the names (never the values) of unknown body fields.
ALTER TABLE install_events ADD COLUMN unknown_fields text[];
