ALTER TABLE api_users DROP CONSTRAINT api_users_lease, DROP COLUMN lease_until, DROP COLUMN lease_owner;
DROP TABLE shared_tokens;
