-- The NATS telemetry feed applies each message once (issue 5): the stream sequence of every
-- applied message, per durable consumer, written in the message's ingest transaction. A
-- redelivery (an ack lost after the commit) finds its row and stores nothing. Rows older than
-- the stream's max age are purged by retention.
CREATE TABLE telemetry_feed_applied (
    consumer   text        NOT NULL,
    stream_seq bigint      NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream_seq)
);
CREATE INDEX telemetry_feed_applied_at_idx ON telemetry_feed_applied (applied_at);
