-- name: create_user
INSERT INTO users (tenant_id, email, display_name, password_hash, role)
VALUES ($1, lower($2), $3, $4, $5)
ON CONFLICT (tenant_id, email) DO NOTHING
RETURNING id, tenant_id, email, display_name, role, created_at;

-- name: get_user_by_email
SELECT id, tenant_id, email, display_name, role, password_hash, active
FROM users WHERE tenant_id = $1 AND email = lower($2);
