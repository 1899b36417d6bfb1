-- API keys managed from the console and `/api/rest/v1/keys`: `manage_keys` (0 or 1) lets a key
-- list, create, rotate and delete its user's keys (set by the operator with
-- `easel keys create --manage-keys`, by a managing key for the keys it creates, and kept by a
-- rotation); `key_hint`, the key's last four characters, shown masked (`********abcd`) so a user
-- can tell keys apart. Keys created before this migration have no hint.
ALTER TABLE api_keys ADD COLUMN manage_keys INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN key_hint TEXT;
