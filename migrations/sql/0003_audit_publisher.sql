-- Audit queries, time travel and the NATS publisher (issue 4).

-- auditLog filters. Positions follow commit order, so these serve the filter and the log's
-- join (event_log.global_position) gives the order.
-- Migrations run in a transaction, so these cannot be built CONCURRENTLY here; building them
-- blocks writes to `events` for as long as it takes. On a large existing log, build them
-- beforehand with CREATE INDEX CONCURRENTLY and the same names (docs/runbooks/projections.md):
-- IF NOT EXISTS then skips them.
CREATE INDEX IF NOT EXISTS events_recorded_at_idx ON events (recorded_at);
CREATE INDEX IF NOT EXISTS events_actor_idx
    ON events ((metadata ->> 'actor_subject'), global_position);
CREATE INDEX IF NOT EXISTS events_correlation_idx ON events ((metadata ->> 'correlation_id'));

-- Readers of the public log (event_log, by position): everything at or before
-- `log_position` is done. The NATS publisher keeps its place here. Positions are gapless and
-- the sequencer commits them in order, so these readers need no xmin horizon.
CREATE TABLE log_checkpoints (
    name         text        PRIMARY KEY,
    log_position bigint      NOT NULL DEFAULT 0 CHECK (log_position >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
