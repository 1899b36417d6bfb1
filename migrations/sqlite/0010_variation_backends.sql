-- Variations on inference backends: a variation of an image made by a model served by
-- `[[backends]]` is claimed for one backend that can do its transform; `backend` names the backend
-- that holds (or last held) it, and its leased rows count in that backend's `max_concurrent`.
ALTER TABLE variations ADD COLUMN backend TEXT;
CREATE INDEX variations_on_backend ON variations (backend) WHERE status = 'PENDING' AND backend IS NOT NULL;
