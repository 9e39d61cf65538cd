-- 0003_send_recognition: find the status webhooks of a send whose answer never reached us.
-- The dispatcher sends biz_opaque_callback_data = 'parlo:outbox:<id>'; Meta echoes it in statuses.
CREATE INDEX message_statuses_callback_idx
    ON message_statuses (tenant_id, (raw->>'biz_opaque_callback_data'))
    WHERE raw ? 'biz_opaque_callback_data';

-- 'failed' is final: a late 'delivered' or 'read' must not hide a failure Meta reported
-- (queued < sending < sent < delivered < read < failed). Only an explicit `parlo outbox retry`
-- takes a message out of 'failed'.
CREATE OR REPLACE FUNCTION parlo_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'received' THEN 0 WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 2
        WHEN 'delivered' THEN 4 WHEN 'read' THEN 5 WHEN 'failed' THEN 6 ELSE -1 END
$$;

-- Statuses still waiting for their message (the dispatcher sweeps them; see ingest.adopt_orphans).
CREATE INDEX message_statuses_orphan_idx ON message_statuses (tenant_id, wamid) WHERE message_id IS NULL;
