-- Job claim counts and redelivery times (see the SQLite migration 0003).
ALTER TABLE generations ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE variations ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries ADD COLUMN redelivered_at BIGINT;
