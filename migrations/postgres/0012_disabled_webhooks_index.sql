-- Which webhooks are disabled: every claim asks whether any is, once per statement, before it
-- tests each due delivery's key (see `held!` in src/store/rows.rs). Nearly always none is, and
-- this index is then empty.
CREATE INDEX api_keys_webhook_disabled ON api_keys (webhook_disabled_at) WHERE webhook_disabled_at IS NOT NULL;
