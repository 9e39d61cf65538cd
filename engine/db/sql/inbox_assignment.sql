-- Automatic assignment (engine/inbox/assignment.py): each team's queue of open, unassigned
-- conversations, oldest first, drained to online members with free capacity.

-- name: next_queued
SELECT id FROM conversations
WHERE tenant_id = $1 AND team_id = $2 AND assignee_id IS NULL AND status = 'open' AND queued_at IS NOT NULL
ORDER BY queued_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: candidates
-- online, active members of the team, least loaded (relative to their capacity) first
SELECT u.id, l.load, u.capacity
FROM team_members tm
JOIN users u ON u.tenant_id = tm.tenant_id AND u.id = tm.user_id
CROSS JOIN LATERAL (
    SELECT count(*) AS load FROM conversations c
    WHERE c.tenant_id = u.tenant_id AND c.assignee_id = u.id AND c.status = 'open'
) l
WHERE tm.tenant_id = $1 AND tm.team_id = $2 AND u.active AND u.presence = 'online' AND u.capacity > 0
ORDER BY l.load::float / u.capacity, l.load, u.id;

-- name: lock_agent
-- an agent's row is held while a conversation is given to them, so that two drains running at once
-- cannot both fill their last free slot; a row someone else holds is skipped, not waited for
SELECT id, capacity FROM users
WHERE tenant_id = $1 AND id = $2 AND active AND presence = 'online'
FOR UPDATE SKIP LOCKED;

-- name: open_load
SELECT count(*) FROM conversations WHERE tenant_id = $1 AND assignee_id = $2 AND status = 'open';

-- name: assign_queued
UPDATE conversations SET assignee_id = $3, queued_at = NULL, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND assignee_id IS NULL
RETURNING id, team_id, assignee_id;

-- name: teams_of_user
SELECT team_id FROM team_members WHERE tenant_id = $1 AND user_id = $2;

-- name: queued_teams
SELECT DISTINCT team_id FROM conversations
WHERE tenant_id = $1 AND assignee_id IS NULL AND status = 'open' AND queued_at IS NOT NULL AND team_id IS NOT NULL;

-- name: audit_system
INSERT INTO audit_log (tenant_id, actor, action, subject, details) VALUES ($1, $2, $3, $4, $5);
