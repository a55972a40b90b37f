-- Event writers announce themselves, so that readers of the log wait only for them.
--
-- Readers of `events` read in (transaction_id, global_position) order below a horizon under
-- which every event's transaction has finished. That horizon used to be pg_snapshot_xmin: the
-- oldest transaction with an id, any transaction at all (a projector batch, the rule
-- evaluator, telemetry ingest), so every open transaction held every reader back.
--
-- Now a transaction that writes events takes the advisory lock hashtext('corral_event_writers')
-- in shared mode BEFORE it has a transaction id, and keeps it to its end. The horizon
-- (projections/src/log.rs) is then the least transaction id of the statement's snapshot that
-- is still running while holding that lock (or that finished between the snapshot and the
-- read of pg_locks), else the snapshot's xmax: a transaction running without the lock has an
-- id, so it can never write an event (the trigger below refuses it) and holds nobody back.
-- The lock is shared: writers never wait for each other; nothing takes it exclusively.
--
-- A transaction is marked (the transaction-local setting corral.event_writer) once it has
-- announced itself. Call corral_announce_event_writer() first in a transaction that writes
-- other tables before its first event; postgres-es's commit starts with the INSERT, where the
-- statement trigger announces it.

CREATE FUNCTION corral_announce_event_writer() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('corral.event_writer', true) = 'on' THEN
        RETURN;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'an event writer must announce itself before its first write: call corral_announce_event_writer() (or insert the events) before writing anything else in the transaction'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(hashtext('corral_event_writers'));
    PERFORM set_config('corral.event_writer', 'on', true);
END $$;

CREATE FUNCTION corral_events_announce_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM corral_announce_event_writer();
    RETURN NULL;
END $$;

CREATE TRIGGER events_announce_writer BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION corral_events_announce_writer();
