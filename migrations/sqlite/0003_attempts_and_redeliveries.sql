-- How many times each job has been claimed: a job whose image storage keeps failing is given up
-- (FAILED) after `render.max_attempts` instead of being retried forever.
ALTER TABLE generations ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE variations ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
-- When a delivery was last redelivered on request: a burst of requests redelivers it once.
ALTER TABLE webhook_deliveries ADD COLUMN redelivered_at INTEGER;
