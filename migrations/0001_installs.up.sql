-- One row per (irisAppId, accountId) install. The credentials are AES-GCM
-- ciphertexts (see crypto/) sealed under key_id and bound to this row and
-- column; they are NULL once the install is uninstalled.
CREATE TABLE installs (
    -- COLLATE "C": byte order, the same on every server whatever its locale,
    -- so keyset pages are stable and comparisons cheap.
    iris_app_id         text COLLATE "C" NOT NULL CHECK (iris_app_id <> '' AND octet_length(iris_app_id) <= 255),
    account_id          uuid NOT NULL,
    status              text NOT NULL CHECK (status IN ('installed', 'uninstalled', 'credentials_rejected')),
    key_id              text,
    client_id_enc       bytea,
    client_secret_enc   bytea,
    -- Bumped on every change of the credentials or of the install's state,
    -- so a rejection seen with old credentials cannot mark newer ones.
    credentials_version bigint NOT NULL,
    -- NULL when only an UNINSTALLED has ever been seen for the install.
    installed_at        timestamptz,
    updated_at          timestamptz NOT NULL,
    uninstalled_at      timestamptz,
    -- Time (JWT iat, else receipt) of the last applied event; older events
    -- are stale.
    last_event_at       timestamptz NOT NULL,
    last_token_at       timestamptz,
    last_error          text,
    PRIMARY KEY (iris_app_id, account_id),
    -- Credentials exist exactly while the install is not uninstalled.
    CONSTRAINT installs_credentials_follow_status CHECK (
        CASE WHEN status = 'uninstalled'
            THEN key_id IS NULL AND client_id_enc IS NULL AND client_secret_enc IS NULL
            ELSE key_id IS NOT NULL AND client_id_enc IS NOT NULL AND client_secret_enc IS NOT NULL
        END
    )
);

-- Listing with a status filter: WHERE status = $1 [AND iris_app_id = $2]
-- AND (iris_app_id, account_id) > ($3, $4) ORDER BY iris_app_id, account_id.
-- Without a status filter the primary key serves the same keyset walk.
CREATE INDEX installs_status_key_idx ON installs (status, iris_app_id, account_id);

-- Every received install callback, applied or not. Never holds a secret.
-- No foreign key: ignored events are logged for installs that do not exist.
CREATE TABLE install_events (
    id          bigserial PRIMARY KEY,
    iris_app_id text COLLATE "C" NOT NULL,
    account_id  uuid NOT NULL,
    type        text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('installed', 'uninstalled', 'ignored', 'stale')),
    event_at    timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    jti         text,
    remote_addr text
);

-- "Latest N events of an install": WHERE iris_app_id = $1 AND account_id = $2
-- ORDER BY id DESC LIMIT N.
CREATE INDEX install_events_install_idx ON install_events (iris_app_id, account_id, id DESC);
