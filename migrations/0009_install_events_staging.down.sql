SET LOCAL lock_timeout = '5s';
-- Events not numbered yet get ids after every existing one, in staging
-- order, so none is lost when id becomes the key again.
UPDATE install_events_out e SET id = n.id
FROM (SELECT staging, (SELECT coalesce(max(id), 0) FROM install_events_out)
        + row_number() OVER (ORDER BY staging) AS id
      FROM install_events_out WHERE id IS NULL) n
WHERE e.staging = n.staging;
SELECT setval('install_events_out_id_seq', max(id)) FROM install_events_out HAVING max(id) IS NOT NULL;

DROP INDEX install_events_out_pending_idx;
CREATE INDEX install_events_out_pending_idx ON install_events_out (iris_app_id, account_id, id)
    WHERE delivery_state = 'pending';
DROP INDEX install_events_out_unnumbered_idx;
DROP INDEX install_events_out_id_key;
ALTER TABLE install_events_out
    DROP CONSTRAINT install_events_out_pkey,
    ALTER COLUMN id SET NOT NULL,
    ADD CONSTRAINT install_events_out_pkey PRIMARY KEY (id);
-- Drops install_events_out_staging_seq with it (OWNED BY).
ALTER TABLE install_events_out DROP COLUMN staging;
