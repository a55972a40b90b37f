-- Inventory history (issue 16): every real change to a device or service is an event in the
-- log, aggregates `Device` and `Service` (aggregate id = the record's id), appended by the
-- inventory's bulk write path in the same statement (and transaction) that writes the table.
-- Being events, they get a position and a link in the hash chain from the sequencer, go out
-- on NATS and the `events` subscription, and are listed by the audit trail like any other.
--
-- version: the record's last event sequence (0: a row with no history, such as one written by
-- hand). The write path inserts event `version + 1` and writes the row only while its version
-- is still the one it read, so the events' key (aggregate_type, aggregate_id, sequence) stays
-- valid and two concurrent writers of one record cannot both succeed (the second fails on
-- the key and is retried).
ALTER TABLE devices ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN version bigint NOT NULL DEFAULT 0;

-- Timestamps in inventory events: RFC 3339 in UTC with microseconds, whatever the session's
-- TimeZone (the same form as recordedAt in the canonical event).
CREATE FUNCTION corral_ts_json(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Member-centric audit: for every device or service id, the events that name it: Membership
-- events listing it in member_ids (static, rule and exclude alike) and its own Device/Service
-- events. Kept by a statement trigger in the transaction that inserts the events, so it is
-- never behind the log and needs no checkpoint; it is a pure function of the events table
-- (corral_member_events_rebuild() recomputes it, as the backfill below does).
-- Device and service ids share the column: an id used by both lists both histories.
CREATE TABLE member_events (
    member_id       text   NOT NULL,
    global_position bigint NOT NULL,
    PRIMARY KEY (member_id, global_position)
);

CREATE FUNCTION corral_member_events_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO member_events (member_id, global_position)
    SELECT m.member_id, n.global_position
      FROM new_events n
     CROSS JOIN LATERAL (
           SELECT jsonb_array_elements_text(n.payload -> n.event_type -> 'member_ids')
           WHERE n.aggregate_type = 'Membership'
           UNION
           SELECT n.aggregate_id WHERE n.aggregate_type IN ('Device', 'Service')) m(member_id)
     WHERE n.aggregate_type IN ('Membership', 'Device', 'Service')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER events_member_events AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION corral_member_events_apply();

CREATE FUNCTION corral_member_events_rebuild() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM member_events;
    INSERT INTO member_events (member_id, global_position)
    SELECT m.member_id, e.global_position
      FROM events e
     CROSS JOIN LATERAL (
           SELECT jsonb_array_elements_text(e.payload -> e.event_type -> 'member_ids')
           WHERE e.aggregate_type = 'Membership'
           UNION
           SELECT e.aggregate_id WHERE e.aggregate_type IN ('Device', 'Service')) m(member_id)
     WHERE e.aggregate_type IN ('Membership', 'Device', 'Service')
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

SELECT corral_member_events_rebuild();

-- Baseline: the history of every record that exists now starts with one event carrying the
-- whole record (source "migration"), and a removal for tombstones, so that the history of
-- every record is complete from here on. The trigger above indexes them.
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                    metadata)
SELECT 'Device', d.id, 1, 'DeviceRecorded', '1',
       jsonb_build_object('DeviceRecorded', jsonb_build_object('record', jsonb_build_object(
           'hostname', d.hostname, 'ip', d.ip, 'mac', d.mac, 'vendor', d.vendor,
           'model', d.model, 'os', d.os, 'os_version', d.os_version,
           'partition', d.partition, 'site', d.site, 'type', d.type,
           'agent_id', d.agent_id, 'poller_id', d.poller_id, 'tags', d.tags,
           'metadata', d.metadata, 'discovery_sources', to_jsonb(d.discovery_sources),
           'is_available', d.is_available, 'first_seen', corral_ts_json(d.first_seen),
           'last_seen', corral_ts_json(d.last_seen)))),
       '{"actor_subject": "corral", "actor_role": "system", "source": "migration",
         "correlation_id": "migration-0011", "causation_id": "migration-0011"}'::jsonb
  FROM devices d ORDER BY d.id;

INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                    metadata)
SELECT 'Service', s.id, 1, 'ServiceRecorded', '1',
       jsonb_build_object('ServiceRecorded', jsonb_build_object('record', jsonb_build_object(
           'device_id', s.device_id, 'type', s.type, 'name', s.name, 'port', s.port,
           'status', s.status, 'tags', s.tags, 'metadata', s.metadata,
           'last_seen', corral_ts_json(s.last_seen)))),
       '{"actor_subject": "corral", "actor_role": "system", "source": "migration",
         "correlation_id": "migration-0011", "causation_id": "migration-0011"}'::jsonb
  FROM services s ORDER BY s.id;

INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                    metadata)
SELECT t.aggregate_type, t.id, 2, t.aggregate_type || 'Removed', '1',
       jsonb_build_object(t.aggregate_type || 'Removed', '{}'::jsonb),
       '{"actor_subject": "corral", "actor_role": "system", "source": "migration",
         "correlation_id": "migration-0011", "causation_id": "migration-0011"}'::jsonb
  FROM (SELECT 'Device' AS aggregate_type, id FROM devices WHERE removed_at IS NOT NULL
        UNION ALL
        SELECT 'Service', id FROM services WHERE removed_at IS NOT NULL) t
 ORDER BY 1, 2;

UPDATE devices SET version = CASE WHEN removed_at IS NULL THEN 1 ELSE 2 END;
UPDATE services SET version = CASE WHEN removed_at IS NULL THEN 1 ELSE 2 END;
