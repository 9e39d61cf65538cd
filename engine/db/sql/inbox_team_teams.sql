-- Teams and their members (engine/inbox/teams.py).

-- name: list_teams
SELECT t.id, t.name,
       coalesce(array_agg(m.user_id ORDER BY m.added_at, m.user_id) FILTER (WHERE m.user_id IS NOT NULL), '{}') AS member_ids
FROM teams t
LEFT JOIN team_members m ON m.tenant_id = t.tenant_id AND m.team_id = t.id
WHERE t.tenant_id = $1
GROUP BY t.id
ORDER BY lower(t.name), t.id;

-- name: get_team
SELECT t.id, t.name,
       coalesce(array_agg(m.user_id ORDER BY m.added_at, m.user_id) FILTER (WHERE m.user_id IS NOT NULL), '{}') AS member_ids
FROM teams t
LEFT JOIN team_members m ON m.tenant_id = t.tenant_id AND m.team_id = t.id
WHERE t.tenant_id = $1 AND t.id = $2
GROUP BY t.id;

-- name: name_taken
SELECT EXISTS (SELECT 1 FROM teams WHERE tenant_id = $1 AND name = $2 AND id IS DISTINCT FROM $3);

-- name: create_team
INSERT INTO teams (tenant_id, name) VALUES ($1, $2)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id;

-- name: lock_team
SELECT id, name FROM teams WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: rename_team
UPDATE teams SET name = $3 WHERE tenant_id = $1 AND id = $2;

-- name: delete_team
DELETE FROM teams WHERE tenant_id = $1 AND id = $2 RETURNING name;

-- name: user_exists
SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2);

-- name: add_member
INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)
ON CONFLICT (team_id, user_id) DO NOTHING
RETURNING user_id;

-- name: remove_member
DELETE FROM team_members WHERE tenant_id = $1 AND team_id = $2 AND user_id = $3 RETURNING user_id;
