-- name: add_source
INSERT INTO kb_sources (tenant_id, kind, name, url) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING id, tenant_id, kind, name, url, state, last_sync_at, last_error, stats;

-- name: get_source
SELECT id, tenant_id, kind, name, url, state, last_sync_at, last_error, stats
FROM kb_sources WHERE tenant_id = $1 AND (name = $2 OR id = $3);

-- name: list_sources
SELECT s.id, s.kind, s.name, s.url, s.state, s.last_sync_at, s.last_error, s.stats,
       (SELECT count(*) FROM kb_documents d WHERE d.source_id = s.id) AS documents,
       (SELECT count(*) FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id WHERE d.source_id = s.id) AS chunks,
       (SELECT array_agg(DISTINCT c.embedder ORDER BY c.embedder) FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id
        WHERE d.source_id = s.id) AS embedders
FROM kb_sources s WHERE s.tenant_id = $1 ORDER BY s.name;

-- name: remove_source
DELETE FROM kb_sources WHERE tenant_id = $1 AND id = $2;

-- name: set_state
UPDATE kb_sources SET state = $2, last_error = $3, stats = coalesce($4, stats),
       last_sync_at = CASE WHEN $2 IN ('ok', 'failed') THEN now() ELSE last_sync_at END
WHERE id = $1;

-- name: source_documents
-- `current`: every chunk of the document was embedded by $2 (a document of another embedder is
-- re-embedded by the next sync even when its text did not change)
SELECT d.id, d.external_id, d.content_hash,
       NOT EXISTS (SELECT 1 FROM kb_chunks c WHERE c.document_id = d.id AND c.embedder <> $2) AS current
FROM kb_documents d WHERE d.source_id = $1;

-- name: stored_documents
SELECT external_id, title, url, text FROM kb_documents WHERE id = ANY($1::uuid[]) ORDER BY external_id;

-- name: embeddings_by_hash
SELECT DISTINCT ON (text_sha256) text_sha256, embedding
FROM kb_chunks WHERE tenant_id = $1 AND embedder = $2 AND text_sha256 = ANY($3::text[]) AND embedding IS NOT NULL;

-- name: upsert_document
INSERT INTO kb_documents (tenant_id, source_id, external_id, title, url, content_hash, text)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (source_id, external_id) DO UPDATE
    SET title = EXCLUDED.title, url = EXCLUDED.url, content_hash = EXCLUDED.content_hash,
        text = EXCLUDED.text, updated_at = now()
RETURNING id;

-- name: delete_chunks
DELETE FROM kb_chunks WHERE document_id = $1;

-- name: insert_chunk
INSERT INTO kb_chunks (tenant_id, document_id, ordinal, text, text_sha256, tokens, embedder, embedding)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: delete_documents
DELETE FROM kb_documents WHERE id = ANY($1::uuid[]);

-- name: tenant_chunks
SELECT c.id, c.text, c.embedding, d.title, d.url, d.external_id, s.kind, s.name AS source_name,
       CASE WHEN s.kind = 'faq' THEN s.name ELSE d.external_id END AS citation
FROM kb_chunks c
JOIN kb_documents d ON d.id = c.document_id
JOIN kb_sources s ON s.id = d.source_id
WHERE c.tenant_id = $1 AND c.embedder = $2
ORDER BY c.id;
