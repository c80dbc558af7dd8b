-- The install lifecycle events (the outbox): one row per committed change
-- the contract names, written in the change's own transaction. Never holds
-- a secret.
--
-- id orders the events in commit order across the fleet: it is taken from
-- the sequence while holding a transaction-level advisory lock that the
-- writing transaction keeps until it commits, so a transaction with a
-- larger id cannot commit before one with a smaller id (see
-- store/events_write.go).
CREATE SEQUENCE install_events_out_id_seq AS bigint;

CREATE TABLE install_events_out (
    id               bigint PRIMARY KEY,
    type             text NOT NULL CHECK (type IN ('install.installed', 'install.uninstalled', 'install.credentials_rejected')),
    iris_app_id      text COLLATE "C" NOT NULL,
    account_id       uuid NOT NULL,
    -- The install's status after the change.
    status           text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    -- Webhook delivery: 'none' when no webhook was configured at write time.
    delivery_state   text NOT NULL CHECK (delivery_state IN ('none', 'pending', 'delivered', 'given_up')),
    attempts         integer NOT NULL DEFAULT 0,
    -- Retries stop 24 h after this: the commit, or the last redelivery.
    retry_since      timestamptz NOT NULL,
    first_attempt_at timestamptz,
    next_attempt_at  timestamptz,
    -- A delivery in progress: no other worker starts one before this.
    leased_until     timestamptz,
    delivered_at     timestamptz,
    -- A short code ("http_500", "timeout"), never a response body.
    last_error       text
);

ALTER SEQUENCE install_events_out_id_seq OWNED BY install_events_out.id;

-- The head of an install's undelivered events: WHERE iris_app_id = $1 AND
-- account_id = $2 AND delivery_state = 'pending' ORDER BY id LIMIT 1.
CREATE INDEX install_events_out_pending_idx ON install_events_out (iris_app_id, account_id, id)
    WHERE delivery_state = 'pending';

-- An install's latest events (admin page).
CREATE INDEX install_events_out_install_idx ON install_events_out (iris_app_id, account_id, id DESC);

-- Retention: WHERE occurred_at < $1.
CREATE INDEX install_events_out_occurred_idx ON install_events_out (occurred_at);
