-- Per-key abuse limits; NULL means the server's default.
ALTER TABLE api_keys ADD COLUMN rate_per_second BIGINT;
ALTER TABLE api_keys ADD COLUMN daily_quota BIGINT;
