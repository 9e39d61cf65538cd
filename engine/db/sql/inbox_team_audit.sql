-- The audit log as admins read it (engine/inbox/audit_view.py).

-- name: list_audit
SELECT a.id, a.actor, a.action, a.subject, a.details, a.created_at, u.id AS actor_id, u.display_name AS actor_name
FROM audit_log a
LEFT JOIN users u ON u.tenant_id = a.tenant_id AND a.actor = 'user:' || u.id::text
WHERE a.tenant_id = $1
  AND ($2::bigint IS NULL OR a.id < $2)
  AND ($3::text IS NULL OR a.action = $3 OR a.action LIKE $4)
ORDER BY a.id DESC
LIMIT $5;
