-- The request inspector: capture bins (`/inspect/{id}`) and the requests they recorded. A bin
-- answers with the response its owner configured (`response_*`; headers as a JSON array of
-- [name, value] pairs); `next_seq` numbers its requests (the capture increments it in the same
-- transaction, which also serializes a bin's captures, so numbers follow commit order). Requests
-- are dropped oldest first past `inspector.max_requests_per_bin` / `max_bytes_per_bin`
-- (`stored_bytes` is what a request counts against the latter). Expired bins answer as missing
-- and are purged with their requests.
CREATE TABLE inspector_bins (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    response_status INTEGER NOT NULL,
    response_headers TEXT NOT NULL,
    response_body BLOB NOT NULL,
    response_delay_ms INTEGER NOT NULL,
    next_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX inspector_bins_by_user ON inspector_bins (user_id, created_at);
CREATE INDEX inspector_bins_by_expiry ON inspector_bins (expires_at);

CREATE TABLE inspector_requests (
    bin_id TEXT NOT NULL REFERENCES inspector_bins (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    body_size INTEGER NOT NULL,
    source TEXT NOT NULL,
    verification TEXT,
    stored_bytes INTEGER NOT NULL,
    PRIMARY KEY (bin_id, seq)
);
