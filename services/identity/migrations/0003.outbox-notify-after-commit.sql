-- The outbox trigger sent a NOTIFY from every writing transaction. PostgreSQL serialises the
-- commits of notifying transactions (a global lock held through the commit's WAL flush), which
-- capped concurrent verifications. The service now wakes its own relay in process after the
-- commit, and sends a NOTIFY outside the writing transaction only for a relay elsewhere.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
