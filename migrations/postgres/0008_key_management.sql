-- API keys managed from the console and `/api/rest/v1/keys` (see the SQLite migration 0009).
ALTER TABLE api_keys ADD COLUMN manage_keys BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_keys ADD COLUMN key_hint TEXT;
