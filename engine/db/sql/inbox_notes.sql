-- Internal notes on a conversation (engine/inbox/notes.py).

-- name: list_notes
SELECT n.id, n.conversation_id, n.body, n.author_id, u.display_name AS author_name, n.created_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', mu.id, 'name', mu.display_name) ORDER BY mu.display_name)
                 FROM users mu WHERE mu.tenant_id = n.tenant_id AND mu.id = ANY(n.mentions)), '[]'::jsonb) AS mentions
FROM notes n
LEFT JOIN users u ON u.tenant_id = n.tenant_id AND u.id = n.author_id
WHERE n.tenant_id = $1 AND n.conversation_id = $2 AND ($3::bigint IS NULL OR n.id = $3)
ORDER BY n.id DESC
LIMIT $4;

-- name: insert_note
INSERT INTO notes (tenant_id, conversation_id, author_id, body, mentions)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: users_by_id
SELECT id FROM users WHERE tenant_id = $1 AND active AND id = ANY($2::uuid[]);

-- name: users_by_local_part
SELECT id FROM users WHERE tenant_id = $1 AND active AND lower(split_part(email, '@', 1)) = ANY($2::text[]);
