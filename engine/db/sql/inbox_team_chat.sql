-- Team chat: channels, direct messages, read markers (engine/inbox/chat.py).

-- Named channels (joined or not: anyone may join them) and the direct channels $2 is in, with
-- members, $2's unread count (others' messages after the read marker) and the last message.
-- name: list_channels
SELECT c.id, c.kind, c.name, me.user_id IS NOT NULL AS joined,
       (SELECT coalesce(json_agg(json_build_object('id', u.id, 'name', u.display_name)
                                 ORDER BY lower(u.display_name), u.id), '[]'::json)
        FROM chat_members cm JOIN users u ON u.tenant_id = cm.tenant_id AND u.id = cm.user_id
        WHERE cm.tenant_id = c.tenant_id AND cm.channel_id = c.id) AS members,
       CASE WHEN me.user_id IS NULL THEN 0 ELSE
           (SELECT count(*) FROM chat_messages x
            WHERE x.tenant_id = c.tenant_id AND x.channel_id = c.id AND x.id > me.last_read_id
              AND x.author_id IS DISTINCT FROM $2) END AS unread,
       last.id AS last_id, last.body AS last_text, last.author_id AS last_author_id,
       la.display_name AS last_author_name, last.created_at AS last_created_at
FROM chat_channels c
LEFT JOIN chat_members me ON me.tenant_id = c.tenant_id AND me.channel_id = c.id AND me.user_id = $2
LEFT JOIN LATERAL (SELECT x.id, x.body, x.author_id, x.created_at FROM chat_messages x
                   WHERE x.tenant_id = c.tenant_id AND x.channel_id = c.id
                   ORDER BY x.id DESC LIMIT 1) last ON me.user_id IS NOT NULL
LEFT JOIN users la ON la.tenant_id = c.tenant_id AND la.id = last.author_id
WHERE c.tenant_id = $1 AND (c.kind = 'channel' OR me.user_id IS NOT NULL)
  AND ($3::uuid IS NULL OR c.id = $3)
ORDER BY c.kind, lower(c.name), last.id DESC NULLS LAST, c.id;

-- name: membership
SELECT c.kind, m.user_id IS NOT NULL AS joined
FROM chat_channels c
LEFT JOIN chat_members m ON m.tenant_id = c.tenant_id AND m.channel_id = c.id AND m.user_id = $3
WHERE c.tenant_id = $1 AND c.id = $2;

-- name: member_ids
SELECT user_id FROM chat_members WHERE tenant_id = $1 AND channel_id = $2 ORDER BY user_id;

-- name: create_channel
INSERT INTO chat_channels (tenant_id, kind, name, created_by) VALUES ($1, 'channel', $2, $3)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id;

-- A new member starts with the history read: joining is not a reason for a badge.
-- name: join
INSERT INTO chat_members (tenant_id, channel_id, user_id, last_read_id)
VALUES ($1, $2, $3, (SELECT coalesce(max(id), 0) FROM chat_messages WHERE tenant_id = $1 AND channel_id = $2))
ON CONFLICT (channel_id, user_id) DO NOTHING
RETURNING user_id;

-- name: active_user
SELECT active FROM users WHERE tenant_id = $1 AND id = $2;

-- name: create_direct
INSERT INTO chat_channels (tenant_id, kind, direct_key, created_by) VALUES ($1, 'direct', $2, $3)
ON CONFLICT (tenant_id, direct_key) DO NOTHING
RETURNING id;

-- name: direct_by_key
SELECT id FROM chat_channels WHERE tenant_id = $1 AND direct_key = $2;

-- name: add_direct_members
INSERT INTO chat_members (tenant_id, channel_id, user_id)
SELECT $1, $2, unnest($3::uuid[])
ON CONFLICT (channel_id, user_id) DO NOTHING;

-- name: messages
SELECT m.id, m.channel_id, m.author_id, u.display_name AS author_name, m.body, m.created_at
FROM chat_messages m
LEFT JOIN users u ON u.tenant_id = m.tenant_id AND u.id = m.author_id
WHERE m.tenant_id = $1 AND m.channel_id = $2 AND ($3::bigint IS NULL OR m.id < $3)
ORDER BY m.id DESC
LIMIT $4;

-- name: post
INSERT INTO chat_messages (tenant_id, channel_id, author_id, body) VALUES ($1, $2, $3, $4)
RETURNING id, created_at;

-- name: mark_read_up_to
UPDATE chat_members SET last_read_id = greatest(last_read_id, $4)
WHERE tenant_id = $1 AND channel_id = $2 AND user_id = $3;

-- name: mark_read
UPDATE chat_members
SET last_read_id = greatest(last_read_id,
                            (SELECT coalesce(max(id), 0) FROM chat_messages WHERE tenant_id = $1 AND channel_id = $2))
WHERE tenant_id = $1 AND channel_id = $2 AND user_id = $3
RETURNING last_read_id;
