-- Admission used to count a user's PENDING generations through this index; since 0010 it reads
-- the user's pending_jobs counter instead, and no query reads the index any more. Every job
-- admitted and finished still paid for it: an entry written and then removed.
DROP INDEX generations_pending_by_user;
