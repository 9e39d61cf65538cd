-- 0002_whatsapp: what the Cloud API path needs beyond the core tables.

-- The verify token is matched, never shown: keep its SHA-256 for the GET handshake lookup.
ALTER TABLE channels ADD COLUMN verify_token_sha256 text;
CREATE INDEX channels_verify_token_idx ON channels (verify_token_sha256) WHERE active;
-- One Meta app signs the webhooks of all its numbers; its secret's fingerprint groups them.
ALTER TABLE channels ADD COLUMN app_secret_sha256 text;

ALTER TABLE messages ADD COLUMN context_wamid text;
ALTER TABLE messages ADD COLUMN occurred_at timestamptz;
ALTER TABLE messages ADD COLUMN channel_id uuid REFERENCES channels(id) ON DELETE SET NULL;

-- Outcome of each webhook delivery we accepted (signature valid).
ALTER TABLE webhook_receipts ADD COLUMN messages integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_receipts ADD COLUMN statuses integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_receipts ADD COLUMN duplicates integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_receipts ADD COLUMN rejected jsonb NOT NULL DEFAULT '[]'::jsonb;

-- Inbound media, fetched in the background from the Graph API into the storage backend.
CREATE TABLE media (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    message_id     bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    media_id       text NOT NULL,
    mime_type      text,
    sha256         text,
    size_bytes     bigint,
    storage_key    text,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'fetched', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, message_id)
);
CREATE INDEX media_due_idx ON media (run_after) WHERE state = 'pending';

-- Message templates of a WhatsApp Business Account, synced from the Graph API.
CREATE TABLE templates (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    waba_id        text NOT NULL,
    meta_id        text,
    name           text NOT NULL,
    language       text NOT NULL,
    category       text,
    status         text NOT NULL,
    components     jsonb NOT NULL DEFAULT '[]'::jsonb,
    reason         text,
    synced_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, waba_id, name, language)
);

-- Statuses only move forward: queued < sending < sent < failed < delivered < read.
-- (A 'failed' after 'sent' wins; a late 'sent' or 'delivered' never overwrites what is further on.)
CREATE FUNCTION parlo_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'received' THEN 0 WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 2
        WHEN 'failed' THEN 3 WHEN 'delivered' THEN 4 WHEN 'read' THEN 5 ELSE -1 END
$$;
