-- 0005_webhook_rejects: a trace of correctly signed deliveries that were refused (400), so that
-- what Meta sent can still be inspected. Unsigned requests are never stored.
CREATE TABLE webhook_rejects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    reason       text NOT NULL,
    body_sha256  text NOT NULL,
    size_bytes   integer NOT NULL,
    body_head    bytea NOT NULL  -- the first 64 KiB
);
CREATE INDEX webhook_rejects_received_idx ON webhook_rejects (received_at DESC);
