-- Syncing a knowledge source (engine/ai/knowledge/sync.py). One sync of a source at a time, across
-- every process (the Assistant replicas, their scheduler, the CLI): a session advisory lock keyed
-- by the source, released by the sync or by PostgreSQL when its connection dies.

-- name: try_lock_source
SELECT pg_try_advisory_lock(hashtextextended('parlo.kb_source:' || $1::uuid::text, 0));

-- name: unlock_source
SELECT pg_advisory_unlock(hashtextextended('parlo.kb_source:' || $1::uuid::text, 0));

-- name: due_wordpress
-- WordPress sources whose last sync is older than $1 seconds (or that never synced), oldest first
SELECT tenant_id, id FROM kb_sources
WHERE kind = 'wordpress' AND (last_sync_at IS NULL OR last_sync_at < now() - make_interval(secs => $1))
ORDER BY last_sync_at NULLS FIRST
LIMIT $2;

-- name: has_stale_documents
-- some chunk of the source was embedded by another embedder than $2 (a sync re-embeds it)
SELECT EXISTS (SELECT 1 FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id
               WHERE d.source_id = $1 AND c.embedder <> $2);
