SET LOCAL lock_timeout = '5s';
-- The start-up key-id check (store.KeyIDs) walks this index once per
-- distinct key id instead of reading the whole installs table at every start.
CREATE INDEX installs_key_id_idx ON installs (key_id) WHERE key_id IS NOT NULL;
