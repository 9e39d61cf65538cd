-- name: load_shard
SELECT id, tenant_id, channel_id, contact_id, status, ai_mode, assignee_id, unread_count,
       last_inbound_at, last_message_at
FROM conversations
WHERE status <> 'resolved' AND bucket % $1 = $2;

-- name: get_conversation
SELECT id, tenant_id, channel_id, contact_id, status, ai_mode, assignee_id, unread_count,
       last_inbound_at, last_message_at
FROM conversations
WHERE id = $1;

-- name: get_conversations
SELECT id, tenant_id, channel_id, contact_id, status, ai_mode, assignee_id, unread_count,
       last_inbound_at, last_message_at
FROM conversations
WHERE id = ANY($1::uuid[]);
