-- On-demand network sweeps (docs/sweeps.md).
--
-- sweep_runs: one row per SweepRun aggregate, written by the `sweeps` projector from the run's
-- events, except the progress columns (hosts_done, hosts_up), which the results ingest adds to
-- in the transaction that stores the results.
CREATE TABLE sweep_runs (
    id               uuid        PRIMARY KEY,
    status           text        NOT NULL,
    poller_id        text        NOT NULL,
    agent_id         text,
    targets          text[]      NOT NULL,
    group_id         uuid,
    hosts            text[]      NOT NULL,
    hosts_total      bigint      NOT NULL,
    ports            integer[]   NOT NULL,
    icmp             boolean     NOT NULL,
    timeout_ms       integer     NOT NULL,
    concurrency      integer     NOT NULL,
    retention_days   integer     NOT NULL,
    idempotency_key  text        NOT NULL,
    reason           text,
    requested_by     text        NOT NULL,
    scheduled_at     timestamptz NOT NULL,
    deadline         timestamptz NOT NULL,
    job_key          text,
    claim_by         timestamptz,
    job_removed_at   timestamptz,
    ended_at         timestamptz,
    failure_code     text,
    failure_message  text,
    cancelled_by     text,
    hosts_done       bigint      NOT NULL DEFAULT 0,
    hosts_up         bigint      NOT NULL DEFAULT 0,
    results_purged_at timestamptz,
    version          bigint      NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX sweep_runs_list_idx ON sweep_runs (scheduled_at DESC, id DESC);
CREATE INDEX sweep_runs_status_idx ON sweep_runs (status, scheduled_at DESC, id DESC);
CREATE INDEX sweep_runs_poller_idx ON sweep_runs (poller_id, scheduled_at DESC, id DESC);
CREATE INDEX sweep_runs_open_idx ON sweep_runs (deadline)
    WHERE status IN ('QUEUED', 'DISPATCHED', 'ACKNOWLEDGED', 'RUNNING');
-- Ended runs whose job key the dispatcher has yet to delete.
CREATE INDEX sweep_runs_job_idx ON sweep_runs (ended_at)
    WHERE job_key IS NOT NULL AND job_removed_at IS NULL;

-- Results, one row per host of a run, in daily partitions of observed_at (no default
-- partition: corral_sweep_partitions creates them ahead; the cleanup worker drops whole
-- partitions once every run in them is past its retention).
CREATE TABLE sweep_results (
    run_id          uuid        NOT NULL,
    host_ip         inet        NOT NULL,
    network_cidr    cidr        NOT NULL,
    icmp_available  boolean,
    open_ports      integer[]   NOT NULL,
    latency_ms      real,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    observed_at     timestamptz NOT NULL
) PARTITION BY RANGE (observed_at);
CREATE INDEX sweep_results_run_idx ON sweep_results (run_id, host_ip);

-- A host is stored once per run, whichever partition its result went to and however often
-- a poller re-sent it: the results ingest inserts here first and stores only the new hosts.
CREATE TABLE sweep_result_hosts (
    run_id  uuid NOT NULL,
    host_ip inet NOT NULL,
    PRIMARY KEY (run_id, host_ip)
);

CREATE FUNCTION corral_sweep_partitions(day_from date, day_to date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
    made integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('corral_sweep_partitions'));
    d := day_from;
    WHILE d <= day_to LOOP
        part := 'sweep_results_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(format('public.%I', part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE public.%I PARTITION OF public.sweep_results FOR VALUES FROM (%L) TO (%L)',
                part, to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
                to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
            made := made + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN made;
END $$;
