-- Uploaded init images (`POST /init-image`, `POST /canvas-init-image`): each row is an upload
-- policy first (one file, of `extension`, until `expires_at`), then the file at `storage_key`.
-- `uploaded_at` is set when Easel received the file itself (local storage); with S3 the bytes
-- go straight to the bucket and the file's presence is checked when a generation uses it.
CREATE TABLE init_images (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('INIT', 'CANVAS_INIT', 'CANVAS_MASK')),
    extension TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    uploaded_at BIGINT,
    size BIGINT
);
CREATE INDEX init_images_by_user ON init_images (user_id, created_at);
