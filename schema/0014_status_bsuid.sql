-- 0014_status_bsuid: a status names its recipient's BSUID ("recipient_user_id") even when the message
-- went to a phone number. A contact known by phone alone (first seen before Meta sent BSUIDs, or only
-- ever written to) records that BSUID from the status, so that when the customer later writes by
-- username alone, with no phone, the message finds this contact instead of making a second one.
--
-- Only a contact without a BSUID learns one, and only one no other contact of the tenant holds: two
-- rows for one customer are never merged here. A delivery creating a contact with the same BSUID at
-- the same moment is decided by the unique index; the status then leaves the contact as it was.
CREATE FUNCTION parlo_learn_bsuid(p_tenant uuid, p_conversation uuid, p_bsuid text, p_parent_bsuid text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE contacts c
    SET bsuid = p_bsuid, parent_bsuid = COALESCE(c.parent_bsuid, p_parent_bsuid), updated_at = now()
    FROM conversations v
    WHERE v.id = p_conversation AND v.tenant_id = p_tenant AND c.id = v.contact_id AND c.bsuid IS NULL
      AND NOT EXISTS (SELECT 1 FROM contacts o WHERE o.tenant_id = p_tenant AND o.bsuid = p_bsuid);
    RETURN FOUND;
EXCEPTION WHEN unique_violation THEN
    RETURN false;
END $$;
