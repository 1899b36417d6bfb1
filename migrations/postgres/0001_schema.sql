-- The PostgreSQL schema: the same tables as SQLite's migrations, with PostgreSQL types. Times are
-- integer milliseconds since the Unix epoch; ids are lowercase hyphenated UUIDs as text.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    api_concurrency_slots BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    webhook_url TEXT,
    webhook_api_key_sealed BYTEA,
    signing_secret_sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    deleted_at BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);

CREATE TABLE generations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    api_key_id TEXT NOT NULL REFERENCES api_keys (id),
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETE', 'FAILED')),
    params TEXT NOT NULL,
    failure_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX generations_by_user ON generations (user_id, created_at DESC);
CREATE INDEX generations_pending ON generations (created_at) WHERE status = 'PENDING';
CREATE INDEX generations_pending_by_user ON generations (user_id) WHERE status = 'PENDING';

CREATE TABLE images (
    id TEXT PRIMARY KEY,
    generation_id TEXT NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    storage_key TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX images_by_generation ON images (generation_id, idx);

CREATE TABLE variations (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    generation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    transform_type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETE', 'FAILED')),
    storage_key TEXT,
    failure_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX variations_by_image ON variations (image_id, created_at);
CREATE INDEX variations_pending ON variations (created_at) WHERE status = 'PENDING';
CREATE INDEX variations_pending_by_user ON variations (user_id) WHERE status = 'PENDING';

-- The webhook outbox (see the SQLite migration 0002 for the design). Claiming a delivery sets
-- lease_owner and moves next_attempt_at to the lease's expiry: a claimed delivery is not due for
-- anyone else until its lease runs out.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    generation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    url TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count BIGINT NOT NULL DEFAULT 0,
    schedule_index BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due_by_endpoint ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (finished_at) WHERE status = 'failed';
CREATE INDEX webhook_deliveries_by_created ON webhook_deliveries (created_at);
CREATE INDEX webhook_deliveries_by_generation ON webhook_deliveries (generation_id, created_at);

CREATE TABLE webhook_payloads (
    delivery_id TEXT PRIMARY KEY REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    body BYTEA NOT NULL
);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    error_class TEXT,
    error_detail TEXT,
    response_excerpt TEXT,
    PRIMARY KEY (delivery_id, attempt, started_at)
);
