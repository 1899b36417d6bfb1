-- Concurrency slots in O(1): each user's count of PENDING jobs (generations plus variations) is
-- kept on the user's row by triggers, so admission reads one value instead of counting the rows,
-- and no code path that moves a job out of PENDING can forget to update it.
ALTER TABLE users ADD COLUMN pending_jobs INTEGER NOT NULL DEFAULT 0;

UPDATE users SET pending_jobs =
    (SELECT COUNT(*) FROM generations WHERE generations.user_id = users.id AND status = 'PENDING')
  + (SELECT COUNT(*) FROM variations WHERE variations.user_id = users.id AND status = 'PENDING');

CREATE TRIGGER generations_pending_insert AFTER INSERT ON generations WHEN NEW.status = 'PENDING'
BEGIN
    UPDATE users SET pending_jobs = pending_jobs + 1 WHERE id = NEW.user_id;
END;

CREATE TRIGGER generations_pending_update AFTER UPDATE OF status ON generations
    WHEN (OLD.status = 'PENDING') <> (NEW.status = 'PENDING')
BEGIN
    UPDATE users SET pending_jobs = pending_jobs + (CASE WHEN NEW.status = 'PENDING' THEN 1 ELSE -1 END)
        WHERE id = NEW.user_id;
END;

CREATE TRIGGER generations_pending_delete AFTER DELETE ON generations WHEN OLD.status = 'PENDING'
BEGIN
    UPDATE users SET pending_jobs = pending_jobs - 1 WHERE id = OLD.user_id;
END;

CREATE TRIGGER variations_pending_insert AFTER INSERT ON variations WHEN NEW.status = 'PENDING'
BEGIN
    UPDATE users SET pending_jobs = pending_jobs + 1 WHERE id = NEW.user_id;
END;

CREATE TRIGGER variations_pending_update AFTER UPDATE OF status ON variations
    WHEN (OLD.status = 'PENDING') <> (NEW.status = 'PENDING')
BEGIN
    UPDATE users SET pending_jobs = pending_jobs + (CASE WHEN NEW.status = 'PENDING' THEN 1 ELSE -1 END)
        WHERE id = NEW.user_id;
END;

CREATE TRIGGER variations_pending_delete AFTER DELETE ON variations WHEN OLD.status = 'PENDING'
BEGIN
    UPDATE users SET pending_jobs = pending_jobs - 1 WHERE id = OLD.user_id;
END;
