-- Users, API keys, generations, images and variations. Times are integer milliseconds since the
-- Unix epoch; ids are lowercase hyphenated UUIDs.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL UNIQUE,
    api_concurrency_slots INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    webhook_url TEXT,
    webhook_api_key_sealed BLOB,
    signing_secret_sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    deleted_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);

CREATE TABLE generations (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    api_key_id TEXT NOT NULL REFERENCES api_keys (id),
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETE', 'FAILED')),
    params TEXT NOT NULL,
    failure_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX generations_by_user ON generations (user_id, created_at DESC);
CREATE INDEX generations_pending ON generations (created_at) WHERE status = 'PENDING';
CREATE INDEX generations_pending_by_user ON generations (user_id) WHERE status = 'PENDING';

CREATE TABLE images (
    id TEXT PRIMARY KEY NOT NULL,
    generation_id TEXT NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    storage_key TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX images_by_generation ON images (generation_id, idx);

CREATE TABLE variations (
    id TEXT PRIMARY KEY NOT NULL,
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    generation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    transform_type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETE', 'FAILED')),
    storage_key TEXT,
    failure_reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX variations_by_image ON variations (image_id, created_at);
CREATE INDEX variations_pending ON variations (created_at) WHERE status = 'PENDING';
CREATE INDEX variations_pending_by_user ON variations (user_id) WHERE status = 'PENDING';
