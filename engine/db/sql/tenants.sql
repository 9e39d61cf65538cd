-- name: create_tenant
INSERT INTO tenants (slug, name)
VALUES ($1, $2)
ON CONFLICT (slug) DO NOTHING
RETURNING id, slug, name, status, created_at;

-- name: list_tenants
SELECT t.id, t.slug, t.name, t.status, t.created_at,
       (SELECT count(*) FROM users u WHERE u.tenant_id = t.id) AS users,
       (SELECT count(*) FROM channels c WHERE c.tenant_id = t.id) AS channels,
       (SELECT count(*) FROM conversations v WHERE v.tenant_id = t.id AND v.status <> 'resolved') AS open_conversations
FROM tenants t
ORDER BY t.created_at, t.slug;

-- name: get_tenant_by_slug
SELECT id, slug, name, status, created_at FROM tenants WHERE slug = $1;

-- name: audit
INSERT INTO audit_log (tenant_id, actor, action, subject, details)
VALUES ($1, $2, $3, $4, $5);
