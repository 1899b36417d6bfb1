-- Auto-disable of failing webhooks (see the SQLite migration 0007). Milliseconds: BIGINT.
ALTER TABLE api_keys ADD COLUMN webhook_failing_since BIGINT;
ALTER TABLE api_keys ADD COLUMN webhook_disabled_at BIGINT;
