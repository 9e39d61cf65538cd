-- The inbox's conversation list and detail (engine/inbox/conversations.py). Every query names its
-- tenant; row-level security is the second wall.

-- name: list_conversation_ids
-- $2 sees_all, $3 the user, $4 the user's teams; $13/$14 the keyset cursor (sort_at, id); $16 the search
-- without a leading "@", for usernames and BSUIDs.
SELECT c.id, coalesce(c.last_message_at, c.created_at) AS sort_at
FROM conversations c
JOIN contacts ct ON ct.tenant_id = c.tenant_id AND ct.id = c.contact_id
WHERE c.tenant_id = $1
  AND ($2::boolean OR c.assignee_id = $3 OR c.team_id = ANY($4::uuid[]))
  AND ($5::text IS NULL OR c.status = $5)
  AND CASE $6::text
          WHEN 'mine' THEN c.assignee_id IS NOT DISTINCT FROM $3
          WHEN 'unassigned' THEN c.assignee_id IS NULL
          WHEN 'team' THEN c.team_id = ANY($4::uuid[])
          ELSE true
      END
  AND ($7::uuid IS NULL OR c.team_id = $7)
  AND ($8::uuid IS NULL OR EXISTS (
          SELECT 1 FROM conversation_labels cl
          WHERE cl.tenant_id = c.tenant_id AND cl.conversation_id = c.id AND cl.label_id = $8))
  AND ($9::uuid IS NULL OR c.channel_id = $9)
  AND ($10::text IS NULL
       OR ($11::text IS NOT NULL AND ct.wa_id LIKE '%' || $11 || '%')
       OR coalesce(ct.display_name, '') ILIKE $10
       OR coalesce(ct.profile_name, '') ILIKE $10
       OR coalesce(ct.username, '') ILIKE $16
       OR coalesce(ct.bsuid, '') ILIKE $16
       OR EXISTS (
          SELECT 1 FROM messages m
          WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id
            AND to_tsvector('simple', coalesce(m.body, '')) @@ plainto_tsquery('simple', $12)))
  AND ($13::timestamptz IS NULL OR (coalesce(c.last_message_at, c.created_at), c.id) < ($13, $14::uuid))
ORDER BY coalesce(c.last_message_at, c.created_at) DESC, c.id DESC
LIMIT $15;

-- name: conversation_views
SELECT c.id, c.status, c.ai_mode, c.ai_state, c.snoozed_until, c.unread_count, c.last_inbound_at, c.last_message_at,
       c.team_id, t.name AS team_name, c.assignee_id, u.display_name AS assignee_name,
       c.contact_id, ct.wa_id, ct.bsuid, ct.username, coalesce(ct.display_name, ct.profile_name) AS contact_name,
       c.channel_id, ch.display_phone,
       lm.id AS lm_id, lm.direction AS lm_direction, lm.type AS lm_type, lm.body AS lm_text,
       lm.status AS lm_status, lm.created_at AS lm_created_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', l.id, 'name', l.name, 'color', l.color) ORDER BY l.name)
                 FROM conversation_labels cl
                 JOIN labels l ON l.tenant_id = cl.tenant_id AND l.id = cl.label_id
                 WHERE cl.tenant_id = c.tenant_id AND cl.conversation_id = c.id), '[]'::jsonb) AS labels
FROM conversations c
JOIN contacts ct ON ct.tenant_id = c.tenant_id AND ct.id = c.contact_id
JOIN channels ch ON ch.tenant_id = c.tenant_id AND ch.id = c.channel_id
LEFT JOIN teams t ON t.tenant_id = c.tenant_id AND t.id = c.team_id
LEFT JOIN users u ON u.tenant_id = c.tenant_id AND u.id = c.assignee_id
LEFT JOIN LATERAL (
    SELECT m.id, m.direction, m.type, m.body, m.status, m.created_at
    FROM messages m
    WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.type <> 'reaction'
    ORDER BY m.id DESC
    LIMIT 1
) lm ON true
WHERE c.tenant_id = $1 AND c.id = ANY($2::uuid[]);

-- name: lock_conversation
SELECT id, status, ai_mode, team_id, assignee_id, unread_count, snoozed_until, queued_at, contact_id
FROM conversations
WHERE tenant_id = $1 AND id = $2
FOR UPDATE;

-- name: conversation_audience
SELECT id, team_id, assignee_id FROM conversations WHERE tenant_id = $1 AND id = $2;

-- name: update_state
-- status, snoozed_until, ai_mode as decided by the service; the queue follows the state: an open,
-- unassigned conversation of a team waits in that team's queue (keeping its place), others do not.
UPDATE conversations
SET status = $3, snoozed_until = $4, ai_mode = $5, updated_at = now(),
    -- choosing an AI mode hands the conversation back to the assistant (after a pause or a handoff)
    ai_state = CASE WHEN $6 THEN 'active' ELSE ai_state END,
    ai_failures = CASE WHEN $6 THEN 0 ELSE ai_failures END,
    queued_at = CASE WHEN $3 = 'open' AND assignee_id IS NULL AND team_id IS NOT NULL
                     THEN coalesce(queued_at, now()) END
WHERE tenant_id = $1 AND id = $2
RETURNING id, status, team_id, assignee_id;

-- name: update_assignment
UPDATE conversations
SET assignee_id = $3, team_id = $4, updated_at = now(),
    queued_at = CASE WHEN status = 'open' AND $3::uuid IS NULL AND $4::uuid IS NOT NULL
                     THEN coalesce(queued_at, now()) END
WHERE tenant_id = $1 AND id = $2
RETURNING id, status, team_id, assignee_id;

-- name: mark_read
UPDATE conversations SET unread_count = 0, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND unread_count > 0
RETURNING id;

-- name: assignable_user
SELECT id, display_name, active FROM users WHERE tenant_id = $1 AND id = $2;

-- name: team_exists
SELECT id FROM teams WHERE tenant_id = $1 AND id = $2;

-- name: label_exists
SELECT id FROM labels WHERE tenant_id = $1 AND id = $2;

-- name: add_label
INSERT INTO conversation_labels (tenant_id, conversation_id, label_id) VALUES ($1, $2, $3)
ON CONFLICT (conversation_id, label_id) DO NOTHING
RETURNING label_id;

-- name: remove_label
DELETE FROM conversation_labels WHERE tenant_id = $1 AND conversation_id = $2 AND label_id = $3
RETURNING label_id;

-- name: insert_notification
INSERT INTO notifications (tenant_id, user_id, kind, conversation_id, data)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;
