-- Contacts as the inbox shows them (engine/inbox/contacts.py).

-- name: list_contacts
-- sorted by the name shown (display name, else profile name, else username, else number, else BSUID:
-- a customer who hides their number behind a username may have no other), then id; $4/$5 the cursor;
-- $7 the search without a leading "@", for usernames and BSUIDs
SELECT id, wa_id, bsuid, username, profile_name, display_name, email,
       lower(coalesce(display_name, profile_name, username, wa_id, bsuid)) AS sort_name
FROM contacts
WHERE tenant_id = $1
  AND ($2::text IS NULL
       OR coalesce(display_name, '') ILIKE $2 OR coalesce(profile_name, '') ILIKE $2 OR coalesce(email, '') ILIKE $2
       OR coalesce(username, '') ILIKE $7 OR coalesce(bsuid, '') ILIKE $7
       OR ($3::text IS NOT NULL AND wa_id LIKE '%' || $3 || '%'))
  AND ($4::text IS NULL OR (lower(coalesce(display_name, profile_name, username, wa_id, bsuid)), id) > ($4, $5::uuid))
ORDER BY lower(coalesce(display_name, profile_name, username, wa_id, bsuid)), id
LIMIT $6;

-- name: get_contact
SELECT id, wa_id, bsuid, username, profile_name, display_name, email, notes, attributes
FROM contacts WHERE tenant_id = $1 AND id = $2;

-- name: contact_conversations
SELECT id, status, last_message_at, team_id, assignee_id
FROM conversations
WHERE tenant_id = $1 AND contact_id = $2
ORDER BY coalesce(last_message_at, created_at) DESC, id DESC
LIMIT 200;

-- name: update_contact
UPDATE contacts
SET display_name = CASE WHEN $3 THEN $4 ELSE display_name END,
    email = CASE WHEN $5 THEN $6 ELSE email END,
    notes = CASE WHEN $7 THEN $8 ELSE notes END,
    attributes = CASE WHEN $9 THEN $10::jsonb ELSE attributes END,
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING id;
