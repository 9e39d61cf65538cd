-- name: insert_receipt
INSERT INTO webhook_receipts (tenant_id, channel_id, body_sha256, body, messages, statuses, duplicates, rejected)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id;

-- name: upsert_contact
INSERT INTO contacts (tenant_id, wa_id, profile_name)
VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, wa_id) DO UPDATE
    SET profile_name = COALESCE(EXCLUDED.profile_name, contacts.profile_name),
        updated_at = now()
RETURNING id;

-- name: find_active_conversation
SELECT id FROM conversations
WHERE tenant_id = $1 AND channel_id = $2 AND contact_id = $3 AND status <> 'resolved';

-- name: create_conversation
INSERT INTO conversations (tenant_id, channel_id, contact_id)
VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, channel_id, contact_id) WHERE status <> 'resolved' DO NOTHING
RETURNING id;

-- name: insert_status
INSERT INTO message_statuses (tenant_id, message_id, wamid, status, occurred_at, errors, pricing, raw)
VALUES ($1, (SELECT id FROM messages WHERE tenant_id = $1 AND wamid = $2), $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant_id, wamid, status, occurred_at) DO NOTHING
RETURNING message_id;

-- name: advance_message_status
UPDATE messages
SET status = $3,
    error = CASE WHEN $3 = 'failed' THEN $4::jsonb ELSE error END,
    sent_at = CASE WHEN $3 = 'sent' THEN COALESCE(sent_at, $5) ELSE sent_at END
WHERE tenant_id = $1 AND wamid = $2 AND parlo_status_rank($3) > parlo_status_rank(status)
RETURNING id, conversation_id, status;

-- name: learn_bsuid
-- the recipient's BSUID from a status, for a contact known by phone alone (schema/0014_status_bsuid.sql)
SELECT parlo_learn_bsuid($1, $2, $3, $4);

-- name: adopt_pending_statuses
UPDATE message_statuses SET message_id = $3
WHERE tenant_id = $1 AND wamid = $2 AND message_id IS NULL
RETURNING tenant_id, wamid, status, occurred_at, errors;

-- name: upsert_template_status
INSERT INTO templates (tenant_id, waba_id, meta_id, name, language, status, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant_id, waba_id, name, language) DO UPDATE
    SET status = EXCLUDED.status, reason = EXCLUDED.reason,
        meta_id = COALESCE(EXCLUDED.meta_id, templates.meta_id), synced_at = now();

-- name: claim_media
UPDATE media m
SET attempts = m.attempts + 1, run_after = now() + make_interval(secs => $2), updated_at = now()
FROM (
    SELECT md.id FROM media md
    WHERE md.state = 'pending' AND md.run_after <= now()
    ORDER BY md.run_after, md.id
    FOR UPDATE SKIP LOCKED
    LIMIT $1
) due, messages msg
WHERE m.id = due.id AND msg.id = m.message_id
RETURNING m.id, m.tenant_id, m.message_id, m.media_id, m.mime_type, m.sha256, m.attempts, msg.channel_id;

-- name: media_fetched
UPDATE media SET state = 'fetched', storage_key = $2, size_bytes = $3, mime_type = $4, last_error = NULL,
                 updated_at = now()
WHERE id = $1;

-- name: media_retry
UPDATE media SET run_after = now() + make_interval(secs => $2), last_error = $3, updated_at = now() WHERE id = $1;

-- name: media_failed
UPDATE media SET state = 'failed', last_error = $2, updated_at = now() WHERE id = $1;

-- name: adopt_orphans
UPDATE message_statuses s SET message_id = m.id
FROM messages m
WHERE s.message_id IS NULL AND m.tenant_id = s.tenant_id AND m.wamid = s.wamid
RETURNING s.tenant_id, s.wamid, s.status, s.occurred_at, s.errors;

-- name: ingest_message
-- $3 the sender's phone, $4 their BSUID, $5 parent BSUID, $6 username (schema/0012_bsuid.sql)
SELECT * FROM parlo_ingest_message($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16);

-- name: ingest_single_message
-- A delivery of one message and nothing else (most of them): the message and the raw receipt in
-- one statement, so one round trip and no BEGIN/COMMIT of its own. A redelivery stores the receipt
-- with duplicates = 1 and returns a row whose o_message_id is NULL.
WITH m AS (
    SELECT * FROM parlo_ingest_message($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
), r AS (
    INSERT INTO webhook_receipts (tenant_id, channel_id, body_sha256, body, messages, statuses, duplicates, rejected)
    SELECT $1, $2, $17, $18, counted.n, 0, 1 - counted.n, $19 FROM (SELECT count(*)::int AS n FROM m) counted
    RETURNING id
)
SELECT r.id AS o_receipt_id, m.* FROM r LEFT JOIN m ON true;

-- name: insert_reject
INSERT INTO webhook_rejects (reason, body_sha256, size_bytes, body_head) VALUES ($1, $2, $3, $4);
