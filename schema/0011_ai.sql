-- 0011_ai: the assistant's runs and what they cost. One ai_runs row per pipeline run (an answer,
-- a draft, a declined or cancelled one); one ai_usage row per model call within it, with the
-- tokens the provider reported (cache writes and reads apart) and the cost at configured prices;
-- ai_run_sources names what an answer cited, so cost and quality can be read per source.

CREATE TABLE ai_runs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    conversation_id  uuid,
    purpose          text NOT NULL CHECK (purpose IN ('auto', 'draft', 'ask')),
    intent           text,
    handler          text,
    route_tier       text CHECK (route_tier IN ('local', 'model', 'rule', 'fallback')),
    status           text NOT NULL CHECK (status IN ('ok', 'declined', 'cancelled', 'error', 'running')),
    error            text,
    language         text,
    first_token_ms   integer,
    total_ms         integer,
    cost_usd         numeric(12, 6) NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE SET NULL (conversation_id)
);
CREATE INDEX ai_runs_tenant_idx ON ai_runs (tenant_id, created_at DESC);

CREATE TABLE ai_usage (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    run_id              uuid NOT NULL,
    call                text NOT NULL CHECK (call IN ('route', 'answer', 'embed', 'rerank')),
    provider            text NOT NULL,
    model               text NOT NULL,
    input_tokens        integer NOT NULL DEFAULT 0,
    output_tokens       integer NOT NULL DEFAULT 0,
    cache_write_tokens  integer NOT NULL DEFAULT 0,
    cache_read_tokens   integer NOT NULL DEFAULT 0,
    cost_usd            numeric(12, 6) NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, run_id) REFERENCES ai_runs (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ai_usage_tenant_idx ON ai_usage (tenant_id, created_at DESC);

CREATE TABLE ai_run_sources (
    tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    run_id     uuid NOT NULL,
    source     text NOT NULL,
    chunk_id   bigint,
    PRIMARY KEY (run_id, source, chunk_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES ai_runs (tenant_id, id) ON DELETE CASCADE
);

-- examples a tenant adds to teach its router (beside the ones that ship with Parlo)
CREATE TABLE ai_examples (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    text        text NOT NULL CHECK (length(text) BETWEEN 1 AND 1000),
    handler     text NOT NULL CHECK (handler IN ('knowledge', 'chitchat', 'clarification', 'handoff', 'out_of_scope')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, text)
);

-- a human reply pauses the assistant in a conversation; the handoff state machine lives here
ALTER TABLE conversations ADD COLUMN ai_state text NOT NULL DEFAULT 'active'
    CHECK (ai_state IN ('active', 'paused', 'handoff'));
ALTER TABLE conversations ADD COLUMN ai_failures integer NOT NULL DEFAULT 0 CHECK (ai_failures >= 0);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ai_runs', 'ai_usage', 'ai_run_sources', 'ai_examples']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I TO parlo_api
            USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)$p$, t);
    END LOOP;
END
$$;
