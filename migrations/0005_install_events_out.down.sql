DROP TABLE IF EXISTS install_events_out;
DROP SEQUENCE IF EXISTS install_events_out_id_seq;
