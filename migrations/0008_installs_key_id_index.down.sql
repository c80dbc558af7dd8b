DROP INDEX IF EXISTS installs_key_id_idx;
