-- The event store. postgres-es reads and writes the first seven columns by name; the rest are
-- Corral's extensions (DESIGN.md, "The event log"):
--   global_position  insert order (NOT commit order: never checkpoint on it alone)
--   transaction_id   the inserting transaction; readers only read below the xmin horizon
--   recorded_at      when the event was inserted
--   event_id         unique id (NATS Nats-Msg-Id)
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_global_position_key ON events (global_position);
CREATE UNIQUE INDEX events_event_id_key ON events (event_id);
CREATE INDEX events_commit_order_idx ON events (transaction_id, global_position);

-- The public log: one row per committed event, written by the sequencer (a single reader).
--   log_position  gapless, commit-ordered position (1, 2, 3, ...), the `position` of the API
--   hash          sha256(prev_hash || canonical event); see docs/architecture.md
-- Kept beside `events` (1:1 by global_position) rather than in it: assigning a position is then
-- one insert, not an update that rewrites the event row and every index of `events`.
CREATE TABLE event_log (
    log_position    bigint PRIMARY KEY,
    global_position bigint NOT NULL UNIQUE,
    hash            bytea  NOT NULL
);

-- Readers are woken by NOTIFY corral_events, sent by the writing process after its commit
-- (coalesced), never from inside the writing transaction: PostgreSQL serializes the commits of
-- all transactions that NOTIFY, which would undo group commit for every command.

-- One row per catch-up reader (projectors and the sequencer). A reader claims its row with
-- SELECT .. FOR UPDATE SKIP LOCKED, so several processes may run the same projectors.
CREATE TABLE projection_checkpoints (
    name             text        PRIMARY KEY,
    transaction_id   xid8        NOT NULL DEFAULT '0',
    global_position  bigint      NOT NULL DEFAULT 0,
    events_processed bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Write-side index of the group hierarchy, maintained in the same transaction as the Group
-- events that change it (trigger below). Commands read it, under advisory locks, to enforce
-- invariants that span groups (sibling names, cycles, depth). It is not a read model: the
-- GraphQL API reads the projector-built tables in schema rm_group_tree.
CREATE TABLE group_registry (
    id         uuid    PRIMARY KEY,
    group_type text    NOT NULL,
    parent_id  uuid,
    name       text    NOT NULL,
    is_system  boolean NOT NULL DEFAULT false,
    deleted    boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX group_registry_sibling_name_key
    ON group_registry (parent_id, lower(name)) WHERE NOT deleted AND parent_id IS NOT NULL;
CREATE UNIQUE INDEX group_registry_root_key
    ON group_registry (group_type) WHERE parent_id IS NULL AND NOT deleted;
CREATE INDEX group_registry_parent_idx ON group_registry (parent_id) WHERE NOT deleted;

CREATE FUNCTION corral_group_registry_apply() RETURNS trigger LANGUAGE plpgsql AS $$
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
        UPDATE group_registry SET deleted = true WHERE id = NEW.aggregate_id::uuid;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_group_registry AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'Group')
    EXECUTE FUNCTION corral_group_registry_apply();

-- Bearer tokens: only a sha256 of the secret is stored.
CREATE TABLE api_tokens (
    id         uuid        PRIMARY KEY,
    subject    text        NOT NULL,
    role       text        NOT NULL,
    token_hash bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Corral's own aggregate snapshots (not postgres-es's snapshot mode, which applies new events
-- twice): the folded state at `version`, so loading an aggregate reads only later events.
-- A snapshot of another schema_version (the aggregate's state shape changed), or one that no
-- longer deserializes, is ignored and rewritten, never fatal.
CREATE TABLE aggregate_snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    schema_version int         NOT NULL,
    version        bigint      NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
