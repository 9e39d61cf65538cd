-- 0008_teams: agents belong to teams; a conversation may belong to a team (agents see their
-- teams' conversations and their own, see engine/auth/permissions.py).
CREATE TABLE teams (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

ALTER TABLE users ADD CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id);

CREATE TABLE team_members (
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    team_id     uuid NOT NULL,
    user_id     uuid NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id),
    -- a member and a team of the same tenant only
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX team_members_user_idx ON team_members (tenant_id, user_id);

ALTER TABLE conversations ADD COLUMN team_id uuid REFERENCES teams(id) ON DELETE SET NULL;
CREATE INDEX conversations_team_idx ON conversations (tenant_id, team_id) WHERE status <> 'resolved';

ALTER TABLE teams ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON teams TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);
ALTER TABLE team_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON team_members TO parlo_api
    USING (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('parlo.tenant_id', true), '')::uuid);
