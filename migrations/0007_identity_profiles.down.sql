ALTER TABLE install_events DROP COLUMN unknown_fields;
DROP TABLE identity_profiles;
