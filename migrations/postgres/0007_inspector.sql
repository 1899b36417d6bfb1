-- The request inspector: capture bins (`/inspect/{id}`) and the requests they recorded. A bin
-- answers with the response its owner configured (`response_*`; headers as a JSON array of
-- [name, value] pairs); `next_seq` numbers its requests (the capture increments it in the same
-- transaction, which also serializes a bin's captures, so numbers follow commit order). Requests
-- are dropped oldest first past `inspector.max_requests_per_bin` / `max_bytes_per_bin`
-- (`stored_bytes` is what a request counts against the latter). Expired bins answer as missing
-- and are purged with their requests.
CREATE TABLE inspector_bins (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    response_status BIGINT NOT NULL,
    response_headers TEXT NOT NULL,
    response_body BYTEA NOT NULL,
    response_delay_ms BIGINT NOT NULL,
    next_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX inspector_bins_by_user ON inspector_bins (user_id, created_at);
CREATE INDEX inspector_bins_by_expiry ON inspector_bins (expires_at);

CREATE TABLE inspector_requests (
    bin_id TEXT NOT NULL REFERENCES inspector_bins (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    body_size BIGINT NOT NULL,
    source TEXT NOT NULL,
    verification TEXT,
    stored_bytes BIGINT NOT NULL,
    PRIMARY KEY (bin_id, seq)
);
