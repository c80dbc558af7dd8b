-- One row per registered Trackunit API user (POST /token, password grant
-- with rotating refresh tokens). Every credential and token is an AES-GCM
-- ciphertext (see crypto/) bound to this row (the name) and its column.
CREATE TABLE api_users (
    -- The name callers ask for tokens by; the same rule as
    -- store.ValidAPIUserName. COLLATE "C": byte order on every server.
    name              text COLLATE "C" PRIMARY KEY
                      CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$'),
    -- The Trackunit API user name is shown to operators, so it is not sealed.
    username          text NOT NULL CHECK (username <> '' AND octet_length(username) <= 256),
    -- The scopes every password grant asks for.
    scopes            text[] NOT NULL CHECK (cardinality(scopes) > 0),
    status            text NOT NULL CHECK (status IN ('active', 'credentials_rejected')),
    -- The registered credentials, sealed under key_id.
    key_id            text NOT NULL,
    client_id_enc     bytea NOT NULL,
    client_secret_enc bytea NOT NULL,
    password_enc      bytea NOT NULL,
    -- The current refresh token and the cached access token, sealed under
    -- token_key_id. They are rewritten together, in the transaction that
    -- holds the row lock for a refresh, so every replica shares them.
    token_key_id      text,
    refresh_token_enc bytea,
    access_token_enc  bytea,
    token_type        text,
    token_scopes      text[],
    token_expires_at  timestamptz,
    created_at        timestamptz NOT NULL,
    -- The last change of the registration or of the status.
    updated_at        timestamptz NOT NULL,
    -- The last time Trackunit handed out a token for the user.
    last_token_at     timestamptz,
    last_error        text,
    CONSTRAINT api_users_token_key CHECK (
        (token_key_id IS NULL) = (refresh_token_enc IS NULL AND access_token_enc IS NULL)
    ),
    -- A cached access token is complete or absent.
    CONSTRAINT api_users_access_token_complete CHECK (
        (access_token_enc IS NULL) = (token_type IS NULL)
        AND (access_token_enc IS NULL) = (token_scopes IS NULL)
        AND (access_token_enc IS NULL) = (token_expires_at IS NULL)
    )
);
