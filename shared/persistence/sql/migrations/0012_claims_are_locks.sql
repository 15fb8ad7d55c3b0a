-- A ticker's claim is its round's transaction: the claim locks the rows it takes (FOR UPDATE
-- SKIP LOCKED) and the round is marked and committed in the same transaction once published.
-- A dead ticker's session ends with it, its round is rolled back and its rows are free at once;
-- a ticker that stops answering loses its session after `idle_in_transaction_session_timeout`
-- (the lease, set by the claim). No lease is written: each fired row is written once (the
-- mark), not twice (a claim, then the mark), which is what these two columns were for.
ALTER TABLE actions DROP COLUMN claimed_by, DROP COLUMN lease_until;
