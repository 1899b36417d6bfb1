-- Auto-disable of failing webhooks (`webhook.disable_after`): `webhook_failing_since` is the
-- first failed attempt since the key's last successful one (cleared by any success);
-- `webhook_disabled_at` is set once every attempt has failed for `disable_after`, and while it is
-- set the key's deliveries are held (kept pending, not claimed) until the webhook is re-enabled.
ALTER TABLE api_keys ADD COLUMN webhook_failing_since INTEGER;
ALTER TABLE api_keys ADD COLUMN webhook_disabled_at INTEGER;
