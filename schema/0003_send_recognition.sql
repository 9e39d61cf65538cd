-- 0003_send_recognition: find the status webhooks of a send whose answer never reached us.
-- The dispatcher sends biz_opaque_callback_data = 'parlo:outbox:<id>'; Meta echoes it in statuses.
CREATE INDEX message_statuses_callback_idx
    ON message_statuses (tenant_id, (raw->>'biz_opaque_callback_data'))
    WHERE raw ? 'biz_opaque_callback_data';
