-- Concurrency slots in O(1) (see the SQLite migration 0011): each user's count of PENDING jobs,
-- kept on the user's row by triggers. Admission holds the user's row lock (`lock_user`), so the
-- count it reads is exact; a trigger's update takes the same lock.
ALTER TABLE users ADD COLUMN pending_jobs BIGINT NOT NULL DEFAULT 0;

UPDATE users SET pending_jobs =
    (SELECT COUNT(*) FROM generations WHERE generations.user_id = users.id AND status = 'PENDING')
  + (SELECT COUNT(*) FROM variations WHERE variations.user_id = users.id AND status = 'PENDING');

CREATE FUNCTION easel_count_pending_jobs() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'PENDING' THEN
            UPDATE users SET pending_jobs = pending_jobs + 1 WHERE id = NEW.user_id;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.status = 'PENDING' THEN
            UPDATE users SET pending_jobs = pending_jobs - 1 WHERE id = OLD.user_id;
        END IF;
    ELSIF (OLD.status = 'PENDING') <> (NEW.status = 'PENDING') THEN
        UPDATE users SET pending_jobs = pending_jobs + (CASE WHEN NEW.status = 'PENDING' THEN 1 ELSE -1 END)
            WHERE id = NEW.user_id;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER generations_pending_jobs AFTER INSERT OR DELETE OR UPDATE OF status ON generations
    FOR EACH ROW EXECUTE FUNCTION easel_count_pending_jobs();
CREATE TRIGGER variations_pending_jobs AFTER INSERT OR DELETE OR UPDATE OF status ON variations
    FOR EACH ROW EXECUTE FUNCTION easel_count_pending_jobs();
