-- Inference backends: a job of a model served by `[[backends]]` is claimed for one backend, and
-- a backend runs at most `max_concurrent` jobs across every node. `model_id` (a copy of the
-- params' model) lets a claim pick the jobs of the models a backend serves; `backend` names the
-- backend that holds a leased job.
ALTER TABLE generations ADD COLUMN model_id TEXT;
ALTER TABLE generations ADD COLUMN backend TEXT;
UPDATE generations SET model_id = params::jsonb ->> 'model_id';
CREATE INDEX generations_pending_by_model ON generations (model_id, created_at) WHERE status = 'PENDING';
CREATE INDEX generations_on_backend ON generations (backend) WHERE status = 'PENDING' AND backend IS NOT NULL;

-- What each node last saw of each backend's health, for `easel backends list` and /healthz.
CREATE TABLE backend_health (
    name TEXT NOT NULL,
    node_id TEXT NOT NULL,
    healthy BOOLEAN NOT NULL,
    last_error TEXT,
    last_error_at BIGINT,
    checked_at BIGINT NOT NULL,
    PRIMARY KEY (name, node_id)
);
