-- 0009_inbox: what agents work with in the web inbox: labels, internal notes with @mentions,
-- canned replies, notifications, team chat, presence and capacity for automatic assignment.
-- Every table carries tenant_id and the tenant_isolation policy (see 0007); composite foreign keys
-- keep references inside one tenant.

ALTER TABLE conversations ADD CONSTRAINT conversations_tenant_id_id_key UNIQUE (tenant_id, id);
-- when an unassigned conversation entered its team's queue (FIFO for automatic assignment)
ALTER TABLE conversations ADD COLUMN queued_at timestamptz;
ALTER TABLE conversations ADD COLUMN snoozed_until timestamptz;
CREATE INDEX conversations_queue_idx ON conversations (tenant_id, team_id, queued_at)
    WHERE assignee_id IS NULL AND status = 'open';
CREATE INDEX conversations_assignee_idx ON conversations (tenant_id, assignee_id, last_message_at DESC);

-- how many open conversations an agent takes at once, and whether they are there
ALTER TABLE users ADD COLUMN capacity integer NOT NULL DEFAULT 10 CHECK (capacity BETWEEN 0 AND 1000);
ALTER TABLE users ADD COLUMN presence text NOT NULL DEFAULT 'offline'
    CHECK (presence IN ('online', 'away', 'offline'));
ALTER TABLE users ADD COLUMN presence_at timestamptz;

ALTER TABLE contacts ADD CONSTRAINT contacts_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE contacts ADD COLUMN display_name text CHECK (length(display_name) <= 200);
ALTER TABLE contacts ADD COLUMN email text CHECK (length(email) <= 254);
ALTER TABLE contacts ADD COLUMN notes text CHECK (length(notes) <= 10000);

-- text search over message bodies (the conversation list's search box)
CREATE INDEX messages_body_search_idx ON messages USING gin (to_tsvector('simple', coalesce(body, '')));

CREATE TABLE labels (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 50),
    color       text NOT NULL DEFAULT '#6b7280' CHECK (color ~ '^#[0-9a-fA-F]{6}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

CREATE TABLE conversation_labels (
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL,
    label_id         uuid NOT NULL,
    added_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, label_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, label_id) REFERENCES labels (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX conversation_labels_label_idx ON conversation_labels (tenant_id, label_id);

-- internal notes: seen by agents only, never sent to the customer
CREATE TABLE notes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL,
    author_id        uuid,
    body             text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    mentions         uuid[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, author_id) REFERENCES users (tenant_id, id) ON DELETE SET NULL (author_id)
);
CREATE INDEX notes_conversation_idx ON notes (conversation_id, id);

CREATE TABLE canned_replies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    shortcut    text NOT NULL CHECK (shortcut ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 100),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 4096),
    created_by  uuid,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, shortcut),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id) ON DELETE SET NULL (created_by)
);

CREATE TABLE notifications (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id          uuid NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('mention', 'assignment', 'new_conversation', 'chat')),
    conversation_id  uuid,
    data             jsonb NOT NULL DEFAULT '{}'::jsonb,
    read_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX notifications_user_idx ON notifications (tenant_id, user_id, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (tenant_id, user_id) WHERE read_at IS NULL;

-- team chat: named channels (every member of the tenant may join) and direct messages between two
-- agents (direct_key = the two user ids in sorted order, so one pair has one thread)
CREATE TABLE chat_channels (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('channel', 'direct')),
    name        text CHECK (length(name) BETWEEN 1 AND 80),
    direct_key  text,
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, direct_key),
    CHECK ((kind = 'channel') = (name IS NOT NULL) AND (kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE chat_members (
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id    uuid NOT NULL,
    user_id       uuid NOT NULL,
    last_read_id  bigint NOT NULL DEFAULT 0,
    joined_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES chat_channels (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX chat_members_user_idx ON chat_members (tenant_id, user_id);

CREATE TABLE chat_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id  uuid NOT NULL,
    author_id   uuid,
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 4096),
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES chat_channels (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, author_id) REFERENCES users (tenant_id, id) ON DELETE SET NULL (author_id)
);
CREATE INDEX chat_messages_channel_idx ON chat_messages (channel_id, id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['labels', 'conversation_labels', 'notes', 'canned_replies', 'notifications',
                             'chat_channels', 'chat_members', 'chat_messages']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I TO parlo_api
            USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)$p$, t);
    END LOOP;
END
$$;
