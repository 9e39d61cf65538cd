-- 0004_ingest_function: one inbound message in one round trip.
-- Contact upsert, open conversation (found or created), message (a redelivery is a no-op), media
-- row and the conversation's counters, in the order engine/whatsapp/ingest.py used to issue them as
-- four statements. Returns nothing for a duplicate; otherwise the message id and the conversation
-- as committed (the shards take it from there).
CREATE FUNCTION parlo_ingest_message(
    p_tenant uuid, p_channel uuid, p_wa_id text, p_profile text, p_wamid text, p_type text, p_body text,
    p_payload jsonb, p_context text, p_occurred timestamptz, p_media_id text, p_media_mime text,
    p_media_sha text)
RETURNS TABLE (o_message_id bigint, o_id uuid, o_tenant_id uuid, o_channel_id uuid, o_contact_id uuid,
               o_status text, o_ai_mode text, o_assignee_id uuid, o_unread_count integer,
               o_last_inbound_at timestamptz, o_last_message_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_contact uuid;
    v_conversation uuid;
    v_message bigint;
BEGIN
    INSERT INTO contacts (tenant_id, wa_id, profile_name)
    VALUES (p_tenant, p_wa_id, p_profile)
    ON CONFLICT (tenant_id, wa_id) DO UPDATE
        SET profile_name = COALESCE(EXCLUDED.profile_name, contacts.profile_name), updated_at = now()
    RETURNING contacts.id INTO v_contact;

    SELECT c.id INTO v_conversation FROM conversations c
    WHERE c.tenant_id = p_tenant AND c.channel_id = p_channel AND c.contact_id = v_contact AND c.status <> 'resolved';
    IF v_conversation IS NULL THEN
        INSERT INTO conversations (tenant_id, channel_id, contact_id)
        VALUES (p_tenant, p_channel, v_contact)
        ON CONFLICT (tenant_id, channel_id, contact_id) WHERE status <> 'resolved' DO NOTHING
        RETURNING conversations.id INTO v_conversation;
        IF v_conversation IS NULL THEN  -- another delivery created it meanwhile; this statement sees it
            SELECT c.id INTO v_conversation FROM conversations c
            WHERE c.tenant_id = p_tenant AND c.channel_id = p_channel AND c.contact_id = v_contact
              AND c.status <> 'resolved';
        END IF;
    END IF;

    INSERT INTO messages (tenant_id, conversation_id, channel_id, direction, wamid, type, body, payload, status,
                          context_wamid, occurred_at)
    VALUES (p_tenant, v_conversation, p_channel, 'inbound', p_wamid, p_type, p_body, p_payload, 'received',
            p_context, p_occurred)
    ON CONFLICT (tenant_id, wamid) DO NOTHING
    RETURNING messages.id INTO v_message;
    IF v_message IS NULL THEN
        RETURN;  -- a redelivery
    END IF;

    IF p_media_id IS NOT NULL THEN
        INSERT INTO media (tenant_id, message_id, media_id, mime_type, sha256)
        VALUES (p_tenant, v_message, p_media_id, p_media_mime, p_media_sha)
        ON CONFLICT (tenant_id, message_id) DO NOTHING;
    END IF;

    RETURN QUERY
    UPDATE conversations c
    SET last_inbound_at = GREATEST(c.last_inbound_at, p_occurred),
        last_message_at = GREATEST(c.last_message_at, p_occurred),
        unread_count = c.unread_count + 1,
        updated_at = now()
    WHERE c.id = v_conversation
    RETURNING v_message, c.id, c.tenant_id, c.channel_id, c.contact_id, c.status, c.ai_mode, c.assignee_id,
              c.unread_count, c.last_inbound_at, c.last_message_at;
END
$$;
