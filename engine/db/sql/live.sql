-- Live events (engine/live.py): who may see the conversations that events name.

-- name: conversation_scopes
SELECT id, team_id, assignee_id FROM conversations WHERE tenant_id = $1 AND id = ANY($2::uuid[]);
