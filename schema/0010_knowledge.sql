-- 0010_knowledge: a tenant's knowledge base. Sources (uploaded files, a WordPress site, FAQs)
-- hold documents (text extracted once, with a content hash so that a re-sync skips what did not
-- change), cut into chunks with their embedding beside a full-text column. The per-tenant
-- in-memory index of a KnowledgeShard is built from kb_chunks and can be rebuilt at any time.

CREATE TABLE kb_sources (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('file', 'wordpress', 'faq')),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    url           text CHECK (length(url) <= 2000),
    state         text NOT NULL DEFAULT 'idle' CHECK (state IN ('idle', 'syncing', 'ok', 'failed')),
    last_sync_at  timestamptz,
    last_error    text,
    stats         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

CREATE TABLE kb_documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source_id     uuid NOT NULL,
    external_id   text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 500),
    title         text NOT NULL DEFAULT '',
    url           text,
    content_hash  text NOT NULL,
    modified_at   timestamptz,
    text          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, external_id),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, source_id) REFERENCES kb_sources (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE kb_chunks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    document_id  uuid NOT NULL,
    ordinal      integer NOT NULL CHECK (ordinal >= 0),
    text         text NOT NULL,
    text_sha256  text NOT NULL,
    tokens       integer NOT NULL,
    embedder     text NOT NULL,
    embedding    vector(384),
    search       tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    UNIQUE (document_id, ordinal),
    FOREIGN KEY (tenant_id, document_id) REFERENCES kb_documents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX kb_chunks_tenant_idx ON kb_chunks (tenant_id);
-- embeddings are reused by content hash when a document changes only in part
CREATE INDEX kb_chunks_hash_idx ON kb_chunks (tenant_id, embedder, text_sha256);
CREATE INDEX kb_chunks_search_idx ON kb_chunks USING gin (search);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['kb_sources', 'kb_documents', 'kb_chunks']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I TO parlo_api
            USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)$p$, t);
    END LOOP;
END
$$;
