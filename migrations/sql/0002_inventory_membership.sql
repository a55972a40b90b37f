-- Inventory, memberships and rules (issue 3).

-- The inventory that discovery systems feed: plain tables, not event-sourced. Removal leaves a
-- tombstone (removed_at) so that rule evaluation sees the removal; an upsert revives the row.
--
-- Change tracking for incremental rule evaluation works like the event log (DESIGN.md,
-- decision 2): every write stamps the row with its transaction id and a sequence number, and
-- the evaluator reads rows below the xmin horizon in (changed_tx, change_seq) order, so a
-- change that commits late is never skipped. changed_fields lists the fields that changed
-- (NULL: the row is new, revived or removed, so every rule must look at it); changes that the
-- evaluator has not seen yet accumulate.
CREATE SEQUENCE inventory_change_seq;

CREATE TABLE devices (
    id                text        PRIMARY KEY,
    hostname          text,
    ip                text,
    mac               text,
    vendor            text,
    model             text,
    os                text,
    os_version        text,
    partition         text,
    site              text,
    type              text,
    agent_id          text,
    poller_id         text,
    tags              jsonb       NOT NULL DEFAULT '{}',
    metadata          jsonb       NOT NULL DEFAULT '{}',
    discovery_sources text[]      NOT NULL DEFAULT '{}',
    is_available      boolean,
    first_seen        timestamptz,
    last_seen         timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    removed_at        timestamptz,
    changed_tx        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    change_seq        bigint      NOT NULL DEFAULT nextval('inventory_change_seq'),
    changed_fields    text[]
);
CREATE INDEX devices_change_idx ON devices (changed_tx, change_seq);
CREATE INDEX devices_ip_idx ON devices ((ip::inet)) WHERE removed_at IS NULL;
CREATE INDEX devices_hostname_idx ON devices (hostname) WHERE removed_at IS NULL;

CREATE TABLE services (
    id             text        PRIMARY KEY,
    device_id      text        NOT NULL,
    type           text        NOT NULL,
    name           text        NOT NULL,
    port           integer,
    status         text,
    tags           jsonb       NOT NULL DEFAULT '{}',
    metadata       jsonb       NOT NULL DEFAULT '{}',
    last_seen      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    removed_at     timestamptz,
    changed_tx     xid8        NOT NULL DEFAULT pg_current_xact_id(),
    change_seq     bigint      NOT NULL DEFAULT nextval('inventory_change_seq'),
    changed_fields text[]
);
CREATE INDEX services_change_idx ON services (changed_tx, change_seq);
CREATE INDEX services_device_idx ON services (device_id) WHERE removed_at IS NULL;

-- Rules live on the Group aggregate; the registry keeps the current one so that commands can
-- check group: reference cycles and workers can find rules to evaluate.
ALTER TABLE group_registry
    ADD COLUMN rule         jsonb,
    ADD COLUMN rule_text    text,
    ADD COLUMN rule_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN rule_version bigint  NOT NULL DEFAULT 0,
    ADD COLUMN rule_refs    jsonb   NOT NULL DEFAULT '[]';

CREATE OR REPLACE FUNCTION corral_group_registry_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
BEGIN
    IF NEW.event_type = 'GroupCreated' THEN
        INSERT INTO group_registry (id, group_type, parent_id, name, is_system)
        VALUES (NEW.aggregate_id::uuid, body ->> 'group_type', (body ->> 'parent_id')::uuid,
                body ->> 'name', coalesce((body ->> 'is_system')::boolean, false));
    ELSIF NEW.event_type = 'GroupRenamed' THEN
        UPDATE group_registry SET name = body ->> 'name' WHERE id = NEW.aggregate_id::uuid;
    ELSIF NEW.event_type = 'GroupMoved' THEN
        -- Last line of defence: commands check for cycles under the tree lock.
        IF EXISTS (
            WITH RECURSIVE up AS (
                SELECT id, parent_id, 0 AS hops FROM group_registry
                 WHERE id = (body ->> 'new_parent_id')::uuid
                UNION ALL
                SELECT r.id, r.parent_id, up.hops + 1 FROM group_registry r
                  JOIN up ON r.id = up.parent_id WHERE up.hops < 64)
            SELECT 1 FROM up WHERE id = NEW.aggregate_id::uuid) THEN
            RAISE EXCEPTION 'moving group % under % would create a cycle',
                NEW.aggregate_id, body ->> 'new_parent_id' USING ERRCODE = 'check_violation';
        END IF;
        UPDATE group_registry SET parent_id = (body ->> 'new_parent_id')::uuid
         WHERE id = NEW.aggregate_id::uuid;
    ELSIF NEW.event_type = 'GroupDeleted' THEN
        UPDATE group_registry SET deleted = true, rule_enabled = false
         WHERE id = NEW.aggregate_id::uuid;
    ELSIF NEW.event_type = 'GroupRuleSet' THEN
        UPDATE group_registry
           SET rule = body -> 'rule', rule_text = body ->> 'text',
               rule_enabled = (body ->> 'enabled')::boolean,
               rule_version = (body ->> 'rule_version')::bigint,
               rule_refs = coalesce(body -> 'refs', '[]')
         WHERE id = NEW.aggregate_id::uuid;
    ELSIF NEW.event_type = 'GroupRuleCleared' THEN
        UPDATE group_registry
           SET rule = NULL, rule_text = NULL, rule_enabled = false,
               rule_version = (body ->> 'rule_version')::bigint, rule_refs = '[]'
         WHERE id = NEW.aggregate_id::uuid;
    END IF;
    RETURN NULL;
END $$;

-- Write-side index of memberships, kept by a trigger in the transaction of the Membership
-- events. Commands read only the rows of the ids they carry (idempotency), and the rule
-- evaluator diffs against the RULE rows, so neither ever loads a whole group. kind: S static,
-- R rule, X excluded. The read model (rm_membership) is built from the events by a projector.
CREATE TABLE membership_registry (
    group_id  uuid NOT NULL,
    kind      "char" NOT NULL CHECK (kind IN ('S', 'R', 'X')),
    member_id text NOT NULL,
    PRIMARY KEY (group_id, kind, member_id)
);
CREATE INDEX membership_registry_member_idx ON membership_registry (member_id);

-- Entries per group and kind, so that limits are checked without counting a group's rows.
CREATE TABLE membership_registry_counts (
    group_id uuid   NOT NULL,
    kind     "char" NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (group_id, kind)
);

CREATE FUNCTION corral_membership_registry_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    k "char";
    changed bigint;
BEGIN
    IF NEW.event_type IN ('MembersExcluded', 'MembersUnexcluded') THEN
        k := 'X';
    ELSIF body ->> 'source' = 'RULE' THEN
        k := 'R';
    ELSE
        k := 'S';
    END IF;
    IF NEW.event_type IN ('MembersAdded', 'MembersExcluded') THEN
        INSERT INTO membership_registry (group_id, kind, member_id)
        SELECT NEW.aggregate_id::uuid, k, m FROM jsonb_array_elements_text(body -> 'member_ids') m
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS changed = ROW_COUNT;
    ELSIF NEW.event_type IN ('MembersRemoved', 'MembersUnexcluded') THEN
        -- A join on the ids (one index probe each), whatever plan is cached.
        DELETE FROM membership_registry m
         USING jsonb_array_elements_text(body -> 'member_ids') AS x(id)
         WHERE m.group_id = NEW.aggregate_id::uuid AND m.kind = k AND m.member_id = x.id;
        GET DIAGNOSTICS changed = ROW_COUNT;
        changed := -changed;
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO membership_registry_counts (group_id, kind, n)
    VALUES (NEW.aggregate_id::uuid, k, changed)
    ON CONFLICT (group_id, kind) DO UPDATE SET n = membership_registry_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;
CREATE TRIGGER events_membership_registry AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'Membership')
    EXECUTE FUNCTION corral_membership_registry_apply();

-- What the last evaluation of each group's rule did (operational state, not events).
CREATE TABLE rule_runs (
    group_id          uuid        PRIMARY KEY,
    rule_version      bigint      NOT NULL,
    last_run_at       timestamptz NOT NULL,
    last_run_status   text        NOT NULL,
    last_match_count  bigint,
    last_error        text,
    last_duration_ms  bigint,
    last_cause        text,
    -- The newest rule version whose full run succeeded: inventory changes update the group
    -- incrementally only while this is the current version.
    last_ok_version   bigint
);

-- Where the incremental evaluator stands in the inventory change feed, per table.
CREATE TABLE inventory_cursors (
    name       text   PRIMARY KEY,
    changed_tx xid8   NOT NULL DEFAULT '0',
    change_seq bigint NOT NULL DEFAULT 0
);
