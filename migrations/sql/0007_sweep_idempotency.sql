-- Idempotency keys of scheduleSweep (issue 13, docs/sweeps.md): a key names a run only for the
-- subject that used it and only for the idempotency window (24 h by default), and the run id
-- is a random UUID, no longer derived from the key.
--
-- A write-side table like group_registry: the API reserves a fresh run id against
-- (subject, key) here before it schedules the run under that id, so a retry of the request,
-- one that races it, or one after a crash between the reservation and the SweepScheduled
-- event, finds the reservation and schedules (or returns) the same run. `request` is the
-- request's fingerprint (what a reuse is compared on); `reserved_at` starts the window. A
-- reservation past its window is replaced by the next request with its key, and the sweep
-- cleanup deletes the others.
CREATE TABLE sweep_idempotency_keys (
    subject         text        NOT NULL,
    idempotency_key text        NOT NULL,
    run_id          uuid        NOT NULL UNIQUE,
    -- NULL for runs scheduled before this migration: their key returns the run whatever the
    -- request says, as it did then.
    request         jsonb,
    reserved_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, idempotency_key)
);
CREATE INDEX sweep_idempotency_keys_reserved_idx ON sweep_idempotency_keys (reserved_at);

-- The runs scheduled so far keep their keys for the rest of their window (their ids were
-- derived from the key alone, so one run per key, whoever asked).
INSERT INTO sweep_idempotency_keys (subject, idempotency_key, run_id, request, reserved_at)
SELECT requested_by, idempotency_key, id, NULL, scheduled_at FROM sweep_runs
ON CONFLICT DO NOTHING;
