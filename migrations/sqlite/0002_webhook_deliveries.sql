-- The webhook outbox. A delivery is one event for one receiver; it is inserted in the same
-- transaction that finishes its generation, and retried until it succeeds or the schedule ends.
-- The payload lives in its own table: it never changes, while the delivery row is rewritten on
-- every attempt.
--
-- Leases: a delivery handed straight to the engine of the node that finished its generation is
-- inserted with lease_owner set and next_attempt_at at the lease's expiry, so it is not due for
-- anyone else meanwhile. (On SQLite, one node, the engine's memory holds the other leases.)

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
    last_status_code INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
-- Claims read pending deliveries in due order. The partial indexes hold only the rows they
-- serve, so a delivery that succeeds leaves them instead of being rewritten in them; created_at
-- and generation_id never change.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, endpoint, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due_by_endpoint ON webhook_deliveries (endpoint, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (finished_at) WHERE status = 'failed';
CREATE INDEX webhook_deliveries_by_created ON webhook_deliveries (created_at);
CREATE INDEX webhook_deliveries_by_generation ON webhook_deliveries (generation_id, created_at);

CREATE TABLE webhook_payloads (
    delivery_id TEXT PRIMARY KEY NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    body BLOB NOT NULL
);

-- One row per attempt, clustered by delivery (the log is always read per delivery).
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error_class TEXT,
    error_detail TEXT,
    response_excerpt TEXT,
    PRIMARY KEY (delivery_id, attempt, started_at)
) WITHOUT ROWID;
