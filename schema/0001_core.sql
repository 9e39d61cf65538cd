-- 0001_core: the first tables of Parlo. Every tenant-owned table carries tenant_id.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email          text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    display_name   text NOT NULL,
    password_hash  text NOT NULL,
    role           text NOT NULL DEFAULT 'agent' CHECK (role IN ('admin', 'supervisor', 'agent')),
    locale         text NOT NULL DEFAULT 'it' CHECK (locale IN ('it', 'en')),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);

-- A WhatsApp Business phone number of a tenant. phone_number_id routes inbound webhooks.
CREATE TABLE channels (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id               uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    phone_number_id         text NOT NULL UNIQUE,
    waba_id                 text NOT NULL,
    display_phone           text,
    app_secret_encrypted    bytea,
    access_token_encrypted  bytea,
    verify_token_encrypted  bytea,
    active                  boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channels_tenant_idx ON channels (tenant_id);

CREATE TABLE contacts (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    wa_id         text NOT NULL,
    profile_name  text,
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, wa_id)
);

-- bucket is a stable hash of the conversation id (0..1023); ConversationShard i of S owns
-- the conversations with bucket % S = i. engine/sharding.py computes the same value.
CREATE TABLE conversations (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id         uuid NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    contact_id         uuid NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'snoozed', 'resolved')),
    ai_mode            text NOT NULL DEFAULT 'auto' CHECK (ai_mode IN ('auto', 'draft', 'off')),
    assignee_id        uuid REFERENCES users(id) ON DELETE SET NULL,
    unread_count       integer NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    last_inbound_at    timestamptz,
    last_message_at    timestamptz,
    bucket             smallint GENERATED ALWAYS AS
                         ((('x' || substr(md5(id::text), 1, 4))::bit(16)::integer) % 1024) STORED,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant_idx ON conversations (tenant_id, last_message_at DESC);
CREATE INDEX conversations_bucket_idx ON conversations (bucket) WHERE status <> 'resolved';
CREATE UNIQUE INDEX conversations_one_active_per_contact
    ON conversations (tenant_id, channel_id, contact_id) WHERE status <> 'resolved';

CREATE TABLE messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    direction        text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    wamid            text,
    type             text NOT NULL,
    body             text,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'received'
                       CHECK (status IN ('received', 'queued', 'sending', 'sent', 'delivered', 'read', 'failed')),
    error            jsonb,
    author_id        uuid REFERENCES users(id) ON DELETE SET NULL,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, wamid)
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);

-- Every status Meta reported, in arrival order; messages.status keeps the furthest one.
-- message_id is NULL while the status refers to a wamid we have not stored yet.
CREATE TABLE message_statuses (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    message_id   bigint REFERENCES messages(id) ON DELETE CASCADE,
    wamid        text NOT NULL,
    status       text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    errors       jsonb,
    pricing      jsonb,
    raw          jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, wamid, status, occurred_at)
);
CREATE INDEX message_statuses_wamid_idx ON message_statuses (tenant_id, wamid);

-- The raw bytes of every signed webhook we accepted, before interpretation.
CREATE TABLE webhook_receipts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id    uuid REFERENCES channels(id) ON DELETE SET NULL,
    body_sha256   text NOT NULL,
    body          jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_receipts_tenant_idx ON webhook_receipts (tenant_id, received_at DESC);

-- Transactional outbox: written in the same transaction as the action that caused it.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind            text NOT NULL,
    message_id      bigint REFERENCES messages(id) ON DELETE CASCADE,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'in_flight', 'done', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    run_after       timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due_idx ON outbox (run_after) WHERE state = 'pending';

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants(id) ON DELETE CASCADE,
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, created_at DESC);
