-- The current access token of every (credential kind, credential, scope
-- set), shared by every replica, and the lease that lets one replica at a
-- time mint it. A replica takes the lease in one short statement, releases
-- its connection, calls Trackunit, and commits the token in a second short
-- statement that checks the lease is still its own; no connection is held
-- while Trackunit answers. The token is an AES-GCM ciphertext (see crypto/)
-- bound to this row and its column.
CREATE TABLE shared_tokens (
    kind               text NOT NULL CHECK (kind IN ('install', 'api_key')),
    -- install: "irisAppId/accountId"; api_key: the key's name.
    credential         text COLLATE "C" NOT NULL,
    -- The requested scopes, sorted, de-duplicated, space-joined.
    scopes             text COLLATE "C" NOT NULL,
    -- The credentials' version the token was minted with; a token of
    -- replaced credentials is never served.
    credential_version bigint NOT NULL,
    key_id             text,
    access_token_enc   bytea,
    token_type         text,
    token_scopes       text[],
    expires_at         timestamptz,
    obtained_at        timestamptz,
    -- Who may mint now, and until when (then anyone may take over: a
    -- replica that died mid-mint locks nobody out for longer).
    lease_owner        text,
    lease_until        timestamptz,
    PRIMARY KEY (kind, credential, scopes),
    CONSTRAINT shared_tokens_complete CHECK (
        (access_token_enc IS NULL) = (key_id IS NULL)
        AND (access_token_enc IS NULL) = (expires_at IS NULL)
        AND (access_token_enc IS NULL) = (token_type IS NULL)
    ),
    CONSTRAINT shared_tokens_lease CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- API users keep their tokens in their own row (the refresh token rotates);
-- the lease replaces the row lock that used to be held across the call.
ALTER TABLE api_users
    ADD COLUMN lease_owner text,
    ADD COLUMN lease_until timestamptz,
    ADD CONSTRAINT api_users_lease CHECK ((lease_owner IS NULL) = (lease_until IS NULL));
