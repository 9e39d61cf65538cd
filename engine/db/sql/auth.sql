-- name: insert_refresh
INSERT INTO refresh_tokens (tenant_id, user_id, family_id, token_sha256, expires_at)
VALUES ($1, $2, $3, $4, $5);

-- name: refresh_for_update
SELECT r.id, r.tenant_id, r.user_id, r.family_id, r.expires_at, r.used_at, r.revoked_at,
       u.email, u.display_name, u.role, u.active
FROM refresh_tokens r JOIN users u ON u.id = r.user_id
WHERE r.token_sha256 = $1
FOR UPDATE OF r;

-- name: mark_refresh_used
UPDATE refresh_tokens SET used_at = $2 WHERE id = $1;

-- name: revoke_family
UPDATE refresh_tokens SET revoked_at = $2, revoked_reason = $3
WHERE family_id = $1 AND revoked_at IS NULL;
