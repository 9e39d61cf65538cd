-- Canned replies (engine/inbox/canned.py).

-- name: list_canned
SELECT id, shortcut, title, body FROM canned_replies
WHERE tenant_id = $1
  AND ($2::text IS NULL OR shortcut ILIKE $2 OR title ILIKE $2 OR body ILIKE $2)
ORDER BY shortcut
LIMIT $3;

-- name: get_canned
SELECT id, shortcut, title, body FROM canned_replies WHERE tenant_id = $1 AND id = $2;

-- name: lock_canned
SELECT id, shortcut, title, body FROM canned_replies WHERE tenant_id = $1 AND id = $2 FOR UPDATE;

-- name: shortcut_taken
SELECT EXISTS (SELECT 1 FROM canned_replies WHERE tenant_id = $1 AND shortcut = $2 AND id IS DISTINCT FROM $3);

-- name: create_canned
INSERT INTO canned_replies (tenant_id, shortcut, title, body, created_by) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id, shortcut) DO NOTHING
RETURNING id, shortcut, title, body;

-- name: update_canned
UPDATE canned_replies SET shortcut = $3, title = $4, body = $5, updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING id, shortcut, title, body;

-- name: delete_canned
DELETE FROM canned_replies WHERE tenant_id = $1 AND id = $2 RETURNING shortcut;
