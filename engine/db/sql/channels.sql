-- name: add_channel
INSERT INTO channels (tenant_id, phone_number_id, waba_id, display_phone, app_secret_encrypted,
                      access_token_encrypted, verify_token_encrypted, verify_token_sha256, app_secret_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (phone_number_id) DO NOTHING
RETURNING id, tenant_id, phone_number_id, waba_id, display_phone, active, created_at;

-- name: list_channels
SELECT c.id, t.slug AS tenant, c.phone_number_id, c.waba_id, c.display_phone, c.active, c.created_at,
       (SELECT count(*) FROM conversations v WHERE v.channel_id = c.id) AS conversations
FROM channels c JOIN tenants t ON t.id = c.tenant_id
WHERE ($1::uuid IS NULL OR c.tenant_id = $1)
ORDER BY t.slug, c.created_at;

-- name: remove_channel
UPDATE channels SET active = false
WHERE phone_number_id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) AND active
RETURNING id, tenant_id;

-- name: active_routes
SELECT id, tenant_id, phone_number_id, waba_id, app_secret_encrypted, access_token_encrypted
FROM channels WHERE active;

-- name: channel_by_verify_token
SELECT id FROM channels WHERE active AND verify_token_sha256 = $1 LIMIT 1;
