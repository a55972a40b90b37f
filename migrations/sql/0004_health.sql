-- Telemetry, group health rollups and their bookkeeping (issue 5).

-- Raw samples, partitioned by day (UTC) on their timestamp. Partitions are created ahead by
-- the retention worker (and on demand by ingest, for a day that has none yet) and dropped
-- whole once they fall out of the retention window. There is no default partition: a sample
-- for a day without a partition never lands anywhere it cannot be dropped from.
CREATE TABLE telemetry_sysmon (
    device_id    text        NOT NULL,
    ts           timestamptz NOT NULL,
    cpu_percent  real        NOT NULL,
    mem_percent  real        NOT NULL,
    disk_percent real        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);
CREATE INDEX telemetry_sysmon_device_ts_idx ON telemetry_sysmon (device_id, ts);

CREATE TABLE telemetry_services (
    service_id  text        NOT NULL,
    ts          timestamptz NOT NULL,
    available   boolean     NOT NULL,
    latency_ms  real,
    received_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);
CREATE INDEX telemetry_services_service_ts_idx ON telemetry_services (service_id, ts);

-- Creates the daily partitions of both telemetry tables for every day in [day_from, day_to]
-- that has none; returns how many it created. Serialized by an advisory lock, so concurrent
-- callers do not race on the same name.
CREATE FUNCTION corral_telemetry_partitions(day_from date, day_to date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    parent text;
    part text;
    made integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('corral_telemetry_partitions'));
    d := day_from;
    WHILE d <= day_to LOOP
        FOREACH parent IN ARRAY ARRAY['telemetry_sysmon', 'telemetry_services'] LOOP
            part := parent || '_p' || to_char(d, 'YYYYMMDD');
            IF to_regclass(format('public.%I', part)) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%L) TO (%L)',
                    part, parent, to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
                    to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
                made := made + 1;
            END IF;
        END LOOP;
        d := d + 1;
    END LOOP;
    RETURN made;
END $$;

-- Samples for devices or services the inventory does not know: counted here (not stored),
-- per id, and purged with the raw retention.
CREATE TABLE telemetry_unknown (
    kind       text        NOT NULL CHECK (kind IN ('device', 'service')),
    entity_id  text        NOT NULL,
    samples    bigint      NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, entity_id)
);

-- Per-entity buckets (5 minutes: 300, 1 hour: 3600 seconds), folded from raw samples as they
-- arrive. Group rollups are sums over these, so a refresh never rereads raw samples.
CREATE TABLE health_device_buckets (
    device_id    text        NOT NULL,
    bucket_size  integer     NOT NULL,
    bucket_start timestamptz NOT NULL,
    samples      integer     NOT NULL,
    cpu_sum      double precision NOT NULL,
    cpu_max      real        NOT NULL,
    mem_sum      double precision NOT NULL,
    mem_max      real        NOT NULL,
    disk_sum     double precision NOT NULL,
    disk_max     real        NOT NULL,
    PRIMARY KEY (device_id, bucket_size, bucket_start)
);
CREATE INDEX health_device_buckets_start_idx ON health_device_buckets (bucket_start);

CREATE TABLE health_service_buckets (
    service_id   text        NOT NULL,
    bucket_size  integer     NOT NULL,
    bucket_start timestamptz NOT NULL,
    checks       integer     NOT NULL,
    up           integer     NOT NULL,
    down         integer     NOT NULL,
    latency_sum  double precision NOT NULL,
    latency_n    integer     NOT NULL,
    PRIMARY KEY (service_id, bucket_size, bucket_start)
);
CREATE INDEX health_service_buckets_start_idx ON health_service_buckets (bucket_start);

-- Group rollups, shared by every group (no DDL per group). Device groups fill the sysmon
-- columns, service groups the service columns. The *_bins arrays count reporting members by
-- their bucket average, in 1-point bins 0..100 (101 elements): p95 is read from them.
CREATE TABLE health_rollups (
    group_id          uuid        NOT NULL,
    bucket_size       integer     NOT NULL,
    bucket_start      timestamptz NOT NULL,
    samples           bigint      NOT NULL DEFAULT 0,
    devices_reporting integer     NOT NULL DEFAULT 0,
    cpu_sum           double precision NOT NULL DEFAULT 0,
    cpu_max           real,
    cpu_bins          integer[],
    mem_sum           double precision NOT NULL DEFAULT 0,
    mem_max           real,
    mem_bins          integer[],
    disk_sum          double precision NOT NULL DEFAULT 0,
    disk_max          real,
    disk_bins         integer[],
    checks            bigint      NOT NULL DEFAULT 0,
    services_up       integer     NOT NULL DEFAULT 0,
    services_down     integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, bucket_size, bucket_start)
);
CREATE INDEX health_rollups_start_idx ON health_rollups (bucket_start);

-- Element-wise sum of two bin arrays (NULL counts as all zeros).
CREATE FUNCTION corral_bins_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN a IS NULL THEN b
        WHEN b IS NULL THEN a
        ELSE (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
                FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i))
    END
$$;

-- The effective members each group's rollups currently count (kind: 'D' device, 'S'
-- service: the group's type). Ingest maps samples to groups through it, and a refresh diffs
-- it against the membership read model, so rollups and this table change together.
CREATE TABLE health_members (
    group_id  uuid   NOT NULL,
    member_id text   NOT NULL,
    kind      "char" NOT NULL CHECK (kind IN ('D', 'S')),
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX health_members_member_idx ON health_members (member_id, kind, group_id);

-- Groups whose rollups are kept: a group has rollups once its first refresh ran.
CREATE TABLE health_groups (
    group_id     uuid        PRIMARY KEY,
    kind         "char"      NOT NULL CHECK (kind IN ('D', 'S')),
    members      bigint      NOT NULL DEFAULT 0,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

-- Groups whose effective membership may have changed, queued by the `health` projector from
-- Membership and Group events. The refresh worker takes a row once the membership and group
-- tree read models have passed the event that queued it.
CREATE TABLE health_dirty (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id        uuid        NOT NULL,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    queued_at       timestamptz NOT NULL DEFAULT now()
);
