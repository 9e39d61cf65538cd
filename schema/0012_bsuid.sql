-- 0012_bsuid: customers named by a business-scoped user id (BSUID) as well as, or instead of, a phone.
-- Since 2026 Meta sends every user's BSUID ("US.13491208655302741918") and withholds the phone number
-- of a user who adopted a username: such a contact has a bsuid and no wa_id, and is answered by BSUID.
-- A customer seen first by phone and later by BSUID alone (or the reverse) stays one contact, because
-- every message carries the BSUID and parlo_ingest_message records whichever identifier a row lacked.

ALTER TABLE contacts ALTER COLUMN wa_id DROP NOT NULL;
ALTER TABLE contacts ADD COLUMN bsuid text;
ALTER TABLE contacts ADD COLUMN parent_bsuid text;  -- shared by linked business portfolios, when Meta enables it
ALTER TABLE contacts ADD COLUMN username text;
ALTER TABLE contacts ADD CONSTRAINT contacts_identified CHECK (wa_id IS NOT NULL OR bsuid IS NOT NULL);
CREATE UNIQUE INDEX contacts_tenant_bsuid_key ON contacts (tenant_id, bsuid) WHERE bsuid IS NOT NULL;

-- The contact a customer's message belongs to: found by phone when given, else by BSUID, else
-- created. Two deliveries racing to create the same customer cannot make two rows: the unique
-- indexes decide (ON CONFLICT DO NOTHING waits for the other insert to commit) and the loser reads
-- the winner's row. Names are written only when they changed, so a known customer costs no write.
CREATE FUNCTION parlo_identify_contact(p_tenant uuid, p_wa_id text, p_bsuid text, p_parent_bsuid text,
                                       p_username text, p_profile text)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_contact uuid;
    v_wa_id text;
    v_bsuid text;
BEGIN
    FOR attempt IN 1..3 LOOP
        SELECT c.id, c.wa_id, c.bsuid INTO v_contact, v_wa_id, v_bsuid
        FROM contacts c WHERE c.tenant_id = p_tenant AND c.wa_id = p_wa_id;
        IF v_contact IS NULL AND p_bsuid IS NOT NULL THEN
            SELECT c.id, c.wa_id, c.bsuid INTO v_contact, v_wa_id, v_bsuid
            FROM contacts c WHERE c.tenant_id = p_tenant AND c.bsuid = p_bsuid;
        END IF;
        EXIT WHEN v_contact IS NOT NULL;
        INSERT INTO contacts (tenant_id, wa_id, bsuid, parent_bsuid, username, profile_name)
        VALUES (p_tenant, p_wa_id, p_bsuid, p_parent_bsuid, p_username, p_profile)
        ON CONFLICT DO NOTHING
        RETURNING contacts.id INTO v_contact;
        IF v_contact IS NOT NULL THEN
            RETURN v_contact;
        END IF;
        -- another delivery created this customer meanwhile; the next statement sees its row
    END LOOP;
    IF v_contact IS NULL THEN
        RAISE EXCEPTION 'no contact for phone % / BSUID % after three attempts', p_wa_id, p_bsuid;
    END IF;

    IF (p_wa_id IS NOT NULL AND v_wa_id IS DISTINCT FROM p_wa_id)
       OR (p_bsuid IS NOT NULL AND v_bsuid IS DISTINCT FROM p_bsuid) THEN
        PERFORM parlo_contact_learn_identity(p_tenant, v_contact, p_wa_id, p_bsuid);
    END IF;
    UPDATE contacts c
    SET profile_name = COALESCE(p_profile, c.profile_name), username = COALESCE(p_username, c.username),
        parent_bsuid = COALESCE(p_parent_bsuid, c.parent_bsuid), updated_at = now()
    WHERE c.id = v_contact
      AND (c.profile_name, c.username, c.parent_bsuid) IS DISTINCT FROM
          (COALESCE(p_profile, c.profile_name), COALESCE(p_username, c.username),
           COALESCE(p_parent_bsuid, c.parent_bsuid));
    RETURN v_contact;
END
$$;

-- A message named a known contact by one identifier and brought another (or a newer one): the
-- phone a BSUID-only contact turned out to have, or the BSUID of a contact known by phone. Meta
-- gives a user a new BSUID when they change number, so the newest pair wins. An identifier that
-- already names another row stays there: a customer first seen before BSUIDs existed and then by
-- BSUID alone is two rows, and one message is no reason to merge their conversations.
CREATE FUNCTION parlo_contact_learn_identity(p_tenant uuid, p_contact uuid, p_wa_id text, p_bsuid text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE contacts c SET wa_id = p_wa_id, updated_at = now()
    WHERE c.id = p_contact AND p_wa_id IS NOT NULL AND c.wa_id IS DISTINCT FROM p_wa_id
      AND NOT EXISTS (SELECT 1 FROM contacts o WHERE o.tenant_id = p_tenant AND o.wa_id = p_wa_id);
    UPDATE contacts c SET bsuid = p_bsuid, updated_at = now()
    WHERE c.id = p_contact AND p_bsuid IS NOT NULL AND c.bsuid IS DISTINCT FROM p_bsuid
      AND NOT EXISTS (SELECT 1 FROM contacts o WHERE o.tenant_id = p_tenant AND o.bsuid = p_bsuid);
EXCEPTION WHEN unique_violation THEN
    -- a concurrent delivery gave the identifier to another row between the check and the write;
    -- the message is still stored under p_contact, and the next one will try again
    NULL;
END
$$;

-- One inbound message in one round trip, as in 0004, with the sender named by phone, BSUID or both.
CREATE FUNCTION parlo_ingest_message(
    p_tenant uuid, p_channel uuid, p_wa_id text, p_bsuid text, p_parent_bsuid text, p_username text,
    p_profile text, p_wamid text, p_type text, p_body text, p_payload jsonb, p_context text,
    p_occurred timestamptz, p_media_id text, p_media_mime text, p_media_sha text)
RETURNS TABLE (o_message_id bigint, o_id uuid, o_tenant_id uuid, o_channel_id uuid, o_contact_id uuid,
               o_status text, o_ai_mode text, o_assignee_id uuid, o_unread_count integer,
               o_last_inbound_at timestamptz, o_last_message_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_contact uuid;
    v_conversation uuid;
    v_message bigint;
BEGIN
    v_contact := parlo_identify_contact(p_tenant, p_wa_id, p_bsuid, p_parent_bsuid, p_username, p_profile);

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

-- The 0004 signature, kept so that replicas of the previous version still store messages during a
-- rolling upgrade (they know only phone numbers). Drop it once no such replica can be running.
CREATE OR REPLACE FUNCTION parlo_ingest_message(
    p_tenant uuid, p_channel uuid, p_wa_id text, p_profile text, p_wamid text, p_type text, p_body text,
    p_payload jsonb, p_context text, p_occurred timestamptz, p_media_id text, p_media_mime text,
    p_media_sha text)
RETURNS TABLE (o_message_id bigint, o_id uuid, o_tenant_id uuid, o_channel_id uuid, o_contact_id uuid,
               o_status text, o_ai_mode text, o_assignee_id uuid, o_unread_count integer,
               o_last_inbound_at timestamptz, o_last_message_at timestamptz)
LANGUAGE sql AS $$
    SELECT * FROM parlo_ingest_message(p_tenant, p_channel, p_wa_id, NULL, NULL, NULL, p_profile, p_wamid, p_type,
                                       p_body, p_payload, p_context, p_occurred, p_media_id, p_media_mime,
                                       p_media_sha);
$$;
