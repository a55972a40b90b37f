-- Refused attempts: FORBIDDEN answers and UNAUTHENTICATED requests with a known token prefix
-- (api/src/refusals.rs). A bounded log of its own, never the event log: the API writes it in
-- batches from a background task, trims it to CORRAL_REFUSALS_MAX_ROWS and prunes what is
-- older than CORRAL_REFUSALS_RETENTION_DAYS.
CREATE TABLE access_refusals (
    refusal_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    refused_at   timestamptz NOT NULL,
    subject      text,                -- the caller, or the subject of the token prefix
    token_prefix text,                -- for UNAUTHENTICATED: the prefix the request gave
    operation    text        NOT NULL, -- `Mutation.createGroup`, `GET /audit/export`, ...
    group_id     uuid,
    code         text        NOT NULL, -- FORBIDDEN or UNAUTHENTICATED
    reason       text        NOT NULL,
    client_addr  text
);
CREATE INDEX access_refusals_time_idx ON access_refusals (refused_at);
CREATE INDEX access_refusals_subject_idx ON access_refusals (subject, refusal_id);
