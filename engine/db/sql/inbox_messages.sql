-- Messages of a conversation as the inbox shows them (engine/inbox/messages.py). Reactions are
-- messages of their own in the table and are folded into the message they react to.

-- name: message_page_newest
-- the newest page, or the page just older than $3 (before)
SELECT m.id
FROM messages m
WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.type <> 'reaction'
  AND ($3::bigint IS NULL OR m.id < $3)
ORDER BY m.id DESC
LIMIT $4;

-- name: message_page_after
-- the page just newer than $3 (after), oldest first
SELECT m.id
FROM messages m
WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.type <> 'reaction' AND m.id > $3
ORDER BY m.id
LIMIT $4;

-- name: message_views
SELECT m.id, m.conversation_id, m.direction, m.type, m.body, m.status, m.error, m.wamid, m.created_at, m.sent_at,
       m.payload, m.author_id, u.display_name AS author_name,
       md.id AS media_pk, md.mime_type AS media_mime, md.size_bytes AS media_size, md.state AS media_state,
       r.id AS reply_id, r.body AS reply_text, r.direction AS reply_direction,
       coalesce((
           SELECT jsonb_agg(jsonb_build_object('emoji', x.emoji, 'direction', x.direction) ORDER BY x.direction)
           FROM (
               SELECT DISTINCT ON (rx.direction) rx.direction,
                      coalesce(rx.payload->'reaction'->>'emoji', rx.payload->>'emoji', '') AS emoji
               FROM messages rx
               WHERE rx.tenant_id = m.tenant_id AND rx.conversation_id = m.conversation_id
                 AND rx.type = 'reaction' AND m.wamid IS NOT NULL
                 AND coalesce(rx.payload->'reaction'->>'message_id', rx.payload->>'target_wamid') = m.wamid
                 AND rx.status <> 'failed'
               ORDER BY rx.direction, rx.id DESC
           ) x
           WHERE x.emoji <> ''), '[]'::jsonb) AS reactions
FROM messages m
LEFT JOIN users u ON u.tenant_id = m.tenant_id AND u.id = m.author_id
LEFT JOIN media md ON md.tenant_id = m.tenant_id AND md.message_id = m.id
LEFT JOIN LATERAL (
    SELECT p.id, p.body, p.direction FROM messages p
    WHERE p.tenant_id = m.tenant_id AND m.context_wamid IS NOT NULL AND p.wamid = m.context_wamid
    LIMIT 1
) r ON true
WHERE m.tenant_id = $1 AND m.id = ANY($2::bigint[]);

-- name: message_in_conversation
SELECT id, wamid, type, direction FROM messages WHERE tenant_id = $1 AND conversation_id = $2 AND id = $3;

-- name: approved_template
SELECT t.id, t.name, t.language, t.status, t.components
FROM templates t
JOIN channels ch ON ch.tenant_id = t.tenant_id AND ch.waba_id = t.waba_id
JOIN conversations c ON c.tenant_id = ch.tenant_id AND c.channel_id = ch.id
WHERE t.tenant_id = $1 AND c.id = $2 AND t.name = $3 AND t.language = $4 AND upper(t.status) = 'APPROVED'
LIMIT 1;

-- name: set_body
UPDATE messages SET body = $3 WHERE tenant_id = $1 AND id = $2;

-- name: insert_outbound_media
INSERT INTO media (tenant_id, message_id, media_id, mime_type, sha256, size_bytes, storage_key, state)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'fetched')
RETURNING id;

-- name: send_target
SELECT c.id, c.channel_id, ch.phone_number_id, ch.access_token_encrypted, ch.active
FROM conversations c JOIN channels ch ON ch.tenant_id = c.tenant_id AND ch.id = c.channel_id
WHERE c.tenant_id = $1 AND c.id = $2;

-- name: media_for_download
SELECT md.id, md.mime_type, md.storage_key, md.state, md.last_error, m.conversation_id, m.type,
       coalesce(m.payload->m.type->>'filename', m.payload->>'filename') AS filename
FROM media md JOIN messages m ON m.tenant_id = md.tenant_id AND m.id = md.message_id
WHERE md.tenant_id = $1 AND md.id = $2;

-- name: pause_ai
-- a person answered: the assistant steps back in this conversation (schema 0011's ai_state)
UPDATE conversations SET ai_state = 'paused', updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND ai_state <> 'paused'
RETURNING id;
