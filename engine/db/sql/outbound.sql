-- name: conversation_for_send
SELECT c.id, c.tenant_id, c.channel_id, c.last_inbound_at, ct.wa_id, ct.bsuid, ch.phone_number_id,
       ch.active AS channel_active
FROM conversations c
JOIN contacts ct ON ct.id = c.contact_id
JOIN channels ch ON ch.id = c.channel_id
WHERE c.id = $1 AND c.tenant_id = $2;

-- name: insert_outbound_message
INSERT INTO messages (tenant_id, conversation_id, channel_id, direction, type, body, payload, status,
                      context_wamid, author_id, occurred_at)
VALUES ($1, $2, $3, 'outbound', $4, $5, $6, 'queued', $7, $8, now())
RETURNING id, created_at;

-- name: touch_conversation_outbound
UPDATE conversations SET last_message_at = GREATEST(last_message_at, now()), unread_count = 0, updated_at = now()
WHERE id = $1;

-- name: insert_outbox
INSERT INTO outbox (tenant_id, kind, message_id, payload)
VALUES ($1, $2, $3, $4)
RETURNING id;

-- name: notify_outbox
SELECT pg_notify('parlo_outbox', $1::text);

-- name: claim_outbox
UPDATE outbox o
SET state = 'in_flight', attempts = o.attempts + 1, updated_at = now()
FROM (
    SELECT id FROM outbox
    WHERE (state = 'pending' AND run_after <= now())
       OR (state = 'in_flight' AND updated_at < now() - make_interval(secs => $2))
    ORDER BY run_after, id
    FOR UPDATE SKIP LOCKED
    LIMIT $1
) due
WHERE o.id = due.id
RETURNING o.id, o.tenant_id, o.kind, o.message_id, o.payload, o.attempts;

-- name: outbox_done
UPDATE outbox SET state = 'done', last_error = NULL, updated_at = now() WHERE id = $1 AND state = 'in_flight';

-- name: outbox_retry
UPDATE outbox SET state = 'pending', run_after = now() + make_interval(secs => $2), last_error = $3, updated_at = now()
WHERE id = $1 AND state = 'in_flight';

-- name: outbox_defer
UPDATE outbox SET state = 'pending', run_after = now() + make_interval(secs => $2),
                  attempts = GREATEST(attempts - 1, 0), updated_at = now()
WHERE id = $1 AND state = 'in_flight';

-- name: outbox_dead
UPDATE outbox SET state = 'dead', last_error = $2, updated_at = now() WHERE id = $1 AND state = 'in_flight';

-- name: message_sent
UPDATE messages SET wamid = $3, status = CASE WHEN parlo_status_rank(status) < parlo_status_rank('sent') THEN 'sent' ELSE status END,
                    sent_at = COALESCE(sent_at, now())
WHERE tenant_id = $1 AND id = $2
RETURNING conversation_id, status;

-- name: message_sending
UPDATE messages SET status = 'sending' WHERE tenant_id = $1 AND id = $2 AND status = 'queued';

-- name: message_failed
UPDATE messages SET status = 'failed', error = $3 WHERE tenant_id = $1 AND id = $2
RETURNING conversation_id;

-- name: list_outbox
SELECT o.id, t.slug AS tenant, o.kind, o.message_id, o.state, o.attempts, o.run_after, o.last_error, o.created_at,
       m.status AS message_status, coalesce(m.payload->>'to', m.payload->>'recipient') AS recipient
FROM outbox o JOIN tenants t ON t.id = o.tenant_id LEFT JOIN messages m ON m.id = o.message_id
WHERE ($1::text IS NULL OR o.state = $1) AND ($2::uuid IS NULL OR o.tenant_id = $2)
ORDER BY o.id DESC LIMIT $3;

-- name: retry_outbox
UPDATE outbox SET state = 'pending', run_after = now(), attempts = 0, updated_at = now()
WHERE id = $1 AND state = 'dead'
RETURNING id, tenant_id, message_id;

-- name: message_requeued
UPDATE messages SET status = 'queued', error = NULL WHERE id = $1 AND status = 'failed';

-- name: tenant_channel
SELECT id, phone_number_id FROM channels
WHERE tenant_id = $1 AND active AND ($2::text IS NULL OR phone_number_id = $2)
ORDER BY created_at LIMIT 1;

-- name: wamid_seen_for_outbox
SELECT wamid FROM message_statuses
WHERE tenant_id = $1 AND raw ? 'biz_opaque_callback_data' AND raw->>'biz_opaque_callback_data' = $2
ORDER BY id LIMIT 1;
