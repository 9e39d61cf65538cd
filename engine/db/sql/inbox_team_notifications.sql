-- A user's notifications (engine/inbox/notifications.py).

-- name: list_notifications
SELECT id, kind, conversation_id, data, read_at, created_at FROM notifications
WHERE tenant_id = $1 AND user_id = $2
  AND (NOT $3::boolean OR read_at IS NULL)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5;

-- name: unread_count
SELECT count(*) FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND read_at IS NULL;

-- name: mark_read
UPDATE notifications SET read_at = coalesce(read_at, now())
WHERE tenant_id = $1 AND user_id = $2 AND id = $3
RETURNING id;

-- name: mark_all_read
UPDATE notifications SET read_at = now()
WHERE tenant_id = $1 AND user_id = $2 AND read_at IS NULL;

-- name: create_notification
INSERT INTO notifications (tenant_id, user_id, kind, conversation_id, data) VALUES ($1, $2, $3, $4, $5)
RETURNING id;
