-- 0007_row_level_security: the second wall between tenants.
-- API requests run as the role parlo_api (SET LOCAL ROLE, see engine/db/tenancy.py) with the
-- tenant in the setting parlo.tenant_id; parlo_api does not own the tables, so these policies
-- apply to it and it sees and writes only its tenant's rows. System paths (webhook ingest, the
-- outbox, migrations, the CLI) run as the owning role, which routes by phone number id itself.
-- The role must exist first: `parlo up` creates it; on an external database run
--   CREATE ROLE parlo_api NOLOGIN NOINHERIT NOBYPASSRLS; GRANT parlo_api TO <the application role>;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'parlo_api') THEN
        RAISE EXCEPTION 'role parlo_api is missing: CREATE ROLE parlo_api NOLOGIN NOINHERIT NOBYPASSRLS; GRANT parlo_api TO %;', current_user;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO parlo_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO parlo_api;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO parlo_api;
REVOKE ALL ON schema_migrations FROM parlo_api;
REVOKE ALL ON webhook_rejects FROM parlo_api;  -- operator-only: refused deliveries have no tenant

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants TO parlo_api
    USING (id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE channels ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON channels TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contacts TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversations TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE message_statuses ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON message_statuses TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE webhook_receipts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_receipts TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE media ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON media TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE templates ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON templates TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refresh_tokens TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);

-- Tables created later by this role are granted too; each needs its own policy in its migration.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO parlo_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO parlo_api;
