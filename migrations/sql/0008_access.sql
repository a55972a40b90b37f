-- Access as events (aggregate `Subject`): the write-side registry of subjects, their role
-- bindings and their tokens, kept by a trigger in the same transaction as the events, so that
-- a revocation is in force the moment it commits. Secrets stay out of the log: the sha256 of
-- a token's secret is written to access_token_secrets before its TokenCreated event and is
-- inert until that event commits.

CREATE TABLE access_subjects (
    subject_id text        PRIMARY KEY,          -- the aggregate id (UUIDv5 of the name)
    subject    text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);

CREATE TABLE access_bindings (
    subject_id text NOT NULL REFERENCES access_subjects (subject_id),
    role       text NOT NULL,
    scope      uuid                              -- null: global
);
CREATE UNIQUE INDEX access_bindings_key
    ON access_bindings (subject_id, role, coalesce(scope, '00000000-0000-0000-0000-000000000000'));

CREATE TABLE access_tokens (
    token_id      uuid        PRIMARY KEY,
    subject_id    text        NOT NULL REFERENCES access_subjects (subject_id),
    prefix        text        NOT NULL,
    bindings      jsonb       NOT NULL,          -- [{"role": .., "scope": ..}] it may use
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text,
    expired_at    timestamptz
);
CREATE INDEX access_tokens_subject_idx ON access_tokens (subject_id);
CREATE INDEX access_tokens_prefix_idx ON access_tokens (prefix);
-- Live tokens with an expiry, for the worker that records TokenExpired.
CREATE INDEX access_tokens_expiry_idx ON access_tokens (expires_at)
    WHERE expires_at IS NOT NULL AND revoked_at IS NULL AND expired_at IS NULL;

CREATE TABLE access_token_secrets (
    token_id   uuid  PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE
);

-- When each token was last used (a read model, not events), written at most once a minute.
CREATE TABLE access_token_usage (
    token_id     uuid        PRIMARY KEY,
    last_used_at timestamptz NOT NULL
);

-- One counter, bumped by every access event: each process polls it and re-checks the
-- credentials it holds (cached tokens, open websockets) when it moves.
CREATE TABLE access_epoch (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint  NOT NULL
);
INSERT INTO access_epoch VALUES (true, 0);

CREATE FUNCTION corral_access_registry_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    binding jsonb := body -> 'binding';
BEGIN
    IF NEW.event_type = 'SubjectCreated' THEN
        INSERT INTO access_subjects (subject_id, subject, created_at)
        VALUES (NEW.aggregate_id, body ->> 'subject', NEW.recorded_at);
    ELSIF NEW.event_type = 'RoleGranted' THEN
        INSERT INTO access_bindings (subject_id, role, scope)
        VALUES (NEW.aggregate_id, binding ->> 'role', (binding ->> 'scope')::uuid)
        ON CONFLICT DO NOTHING;
    ELSIF NEW.event_type = 'RoleRevoked' THEN
        DELETE FROM access_bindings
         WHERE subject_id = NEW.aggregate_id AND role = binding ->> 'role'
           AND scope IS NOT DISTINCT FROM (binding ->> 'scope')::uuid;
    ELSIF NEW.event_type = 'TokenCreated' THEN
        INSERT INTO access_tokens (token_id, subject_id, prefix, bindings, expires_at, created_at)
        VALUES ((body ->> 'token_id')::uuid, NEW.aggregate_id, body ->> 'prefix',
                body -> 'bindings', (body ->> 'expires_at')::timestamptz, NEW.recorded_at);
    ELSIF NEW.event_type = 'TokenRevoked' THEN
        UPDATE access_tokens SET revoked_at = NEW.recorded_at, revoke_reason = body ->> 'reason'
         WHERE token_id = (body ->> 'token_id')::uuid;
    ELSIF NEW.event_type = 'TokenExpired' THEN
        UPDATE access_tokens SET expired_at = NEW.recorded_at
         WHERE token_id = (body ->> 'token_id')::uuid;
    END IF;
    UPDATE access_epoch SET epoch = epoch + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER events_access_registry AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'Subject')
    EXECUTE FUNCTION corral_access_registry_apply();
