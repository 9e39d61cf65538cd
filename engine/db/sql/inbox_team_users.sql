-- Users of a tenant as the team screens and admins see them (engine/inbox/users_admin.py).

-- name: list_users
SELECT u.id, u.email, u.display_name, u.role, u.presence, u.capacity, u.active,
       coalesce(array_agg(m.team_id ORDER BY m.team_id) FILTER (WHERE m.team_id IS NOT NULL), '{}') AS team_ids
FROM users u
LEFT JOIN team_members m ON m.tenant_id = u.tenant_id AND m.user_id = u.id
WHERE u.tenant_id = $1
GROUP BY u.id
ORDER BY u.active DESC, lower(u.display_name), u.id;

-- name: get_user
SELECT u.id, u.email, u.display_name, u.role, u.presence, u.capacity, u.active,
       coalesce(array_agg(m.team_id ORDER BY m.team_id) FILTER (WHERE m.team_id IS NOT NULL), '{}') AS team_ids
FROM users u
LEFT JOIN team_members m ON m.tenant_id = u.tenant_id AND m.user_id = u.id
WHERE u.tenant_id = $1 AND u.id = $2
GROUP BY u.id;

-- The active owners and admins, locked in a fixed order before any change of role or activity,
-- so that two concurrent demotions cannot both leave the tenant without one.
-- name: lock_managers
SELECT id, role FROM users
WHERE tenant_id = $1 AND active AND role IN ('owner', 'admin')
ORDER BY id
FOR UPDATE;

-- name: lock_user
SELECT id, display_name, role, active, capacity, presence FROM users
WHERE tenant_id = $1 AND id = $2
FOR UPDATE;

-- name: update_user
UPDATE users
SET display_name = $3, role = $4, active = $5, capacity = $6,
    presence = CASE WHEN $5 THEN presence ELSE 'offline' END,
    presence_at = CASE WHEN NOT $5 AND presence <> 'offline' THEN now() ELSE presence_at END
WHERE tenant_id = $1 AND id = $2;

-- name: revoke_refresh_tokens
UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = $3
WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL;

-- name: lock_presence
SELECT presence FROM users WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: set_presence
UPDATE users SET presence = $3, presence_at = now() WHERE tenant_id = $1 AND id = $2;
