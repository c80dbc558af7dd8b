-- One row per registered Trackunit API key (POST /token/v2, grant
-- client_credentials, no refresh token). The credentials are AES-GCM
-- ciphertexts (see crypto/) bound to this row (the name) and column; the
-- key's tokens live in shared_tokens (kind 'api_key', credential = name).
CREATE TABLE api_keys (
    name              text COLLATE "C" PRIMARY KEY
                      CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$'),
    -- The scopes a token may be asked for.
    scopes            text[] NOT NULL CHECK (cardinality(scopes) > 0),
    status            text NOT NULL CHECK (status IN ('active', 'credentials_rejected')),
    key_id            text NOT NULL,
    client_id_enc     bytea NOT NULL,
    client_secret_enc bytea NOT NULL,
    -- At most the last 4 characters of the client id, for operators.
    client_id_hint    text NOT NULL CHECK (char_length(client_id_hint) <= 4),
    -- Bumped when the credentials are replaced, so a token or a rejection
    -- of older credentials is never taken for the new ones.
    credentials_version bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    last_token_at     timestamptz,
    last_error        text
);
