-- The webhook outbox. A delivery is one event for one receiver; it is inserted in the same
-- transaction that finishes its generation, and retried until it succeeds or the schedule ends.
-- The payload lives in its own table: it never changes, while the delivery row is rewritten on
-- every attempt.

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    generation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    url TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count INTEGER NOT NULL DEFAULT 0,
    schedule_index INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_generation ON webhook_deliveries (generation_id, created_at);
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries (status, updated_at);

CREATE TABLE webhook_payloads (
    delivery_id TEXT PRIMARY KEY NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    body BLOB NOT NULL
);

CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error_class TEXT,
    error_detail TEXT,
    response_excerpt TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempt);
