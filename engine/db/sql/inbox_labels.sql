-- Labels of a tenant (engine/inbox/labels.py).

-- name: list_labels
SELECT id, name, color FROM labels WHERE tenant_id = $1 ORDER BY lower(name), id LIMIT 1000;

-- name: create_label
INSERT INTO labels (tenant_id, name, color) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id, name, color;

-- name: update_label
UPDATE labels SET name = coalesce($3, name), color = coalesce($4, color)
WHERE tenant_id = $1 AND id = $2
RETURNING id, name, color;

-- name: delete_label
DELETE FROM labels WHERE tenant_id = $1 AND id = $2 RETURNING id;

-- name: labelled_conversations
SELECT c.id, c.team_id, c.assignee_id
FROM conversation_labels cl JOIN conversations c ON c.tenant_id = cl.tenant_id AND c.id = cl.conversation_id
WHERE cl.tenant_id = $1 AND cl.label_id = $2;
