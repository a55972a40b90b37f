-- Custom roles as events (aggregate `Role`): the registry of role definitions each process
-- compiles its policy from, kept by a trigger in the same transaction as the events; the
-- access epoch moves with every definition, so every process reloads its policy within a
-- second of the commit.

CREATE TABLE access_roles (
    name        text        PRIMARY KEY,
    permissions text[]      NOT NULL,
    defined_at  timestamptz NOT NULL
);

CREATE FUNCTION corral_access_roles_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
BEGIN
    IF NEW.event_type = 'RoleDefined' THEN
        INSERT INTO access_roles (name, permissions, defined_at)
        VALUES (body ->> 'name',
                ARRAY(SELECT jsonb_array_elements_text(body -> 'permissions')),
                NEW.recorded_at)
        ON CONFLICT (name) DO UPDATE
           SET permissions = excluded.permissions, defined_at = excluded.defined_at;
    ELSIF NEW.event_type = 'RoleDeleted' THEN
        DELETE FROM access_roles WHERE name = body ->> 'name';
    END IF;
    UPDATE access_epoch SET epoch = epoch + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER events_access_roles AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'Role')
    EXECUTE FUNCTION corral_access_roles_apply();
