SET LOCAL lock_timeout = '5s';
-- Event ids off the write path (store/events_sequence.go). A writer inserts
-- its event with only a staging number (a plain sequence, drawn with no
-- lock) and no public id; a fleet-wide sequencer, one at a time under an
-- advisory lock, gives every committed but unnumbered event its id in one
-- batch, in staging order. Readers see numbered events only, so ids still
-- sort in commit order (at batch granularity) and a reader that has seen id
-- n never later finds a smaller one.
--
-- Expand only: the previous binary still inserts with an id of its own,
-- drawn under the same advisory lock the sequencer takes, and its rows get
-- a staging number from the default.
CREATE SEQUENCE install_events_out_staging_seq AS bigint;
ALTER TABLE install_events_out ADD COLUMN staging bigint;
-- Existing rows keep their ids; their staging numbers follow the same order.
UPDATE install_events_out SET staging = id;
SELECT setval('install_events_out_staging_seq', coalesce(max(id), 0) + 1, false) FROM install_events_out;
ALTER SEQUENCE install_events_out_staging_seq OWNED BY install_events_out.staging;
ALTER TABLE install_events_out
    ALTER COLUMN staging SET DEFAULT nextval('install_events_out_staging_seq'),
    ALTER COLUMN staging SET NOT NULL,
    DROP CONSTRAINT install_events_out_pkey,
    ALTER COLUMN id DROP NOT NULL,
    ADD CONSTRAINT install_events_out_pkey PRIMARY KEY (staging);

-- The public id: unique once assigned; readers page by it.
CREATE UNIQUE INDEX install_events_out_id_key ON install_events_out (id);

-- The sequencer's probe and batch: WHERE id IS NULL ORDER BY staging.
CREATE INDEX install_events_out_unnumbered_idx ON install_events_out (staging) WHERE id IS NULL;

-- The head of an install's undelivered events, numbered or not: WHERE
-- iris_app_id = $1 AND account_id = $2 AND delivery_state = 'pending'
-- ORDER BY staging LIMIT 1. An install's events are written under its row
-- lock, so their staging order is their commit order and their id order.
DROP INDEX install_events_out_pending_idx;
CREATE INDEX install_events_out_pending_idx ON install_events_out (iris_app_id, account_id, staging)
    WHERE delivery_state = 'pending';
