-- name: upsert_template
INSERT INTO templates (tenant_id, waba_id, meta_id, name, language, category, status, components)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (tenant_id, waba_id, name, language) DO UPDATE
    SET meta_id = EXCLUDED.meta_id, category = EXCLUDED.category, status = EXCLUDED.status,
        components = EXCLUDED.components, synced_at = now();

-- name: list_templates
SELECT waba_id, name, language, category, status, reason, synced_at
FROM templates WHERE tenant_id = $1 ORDER BY name, language;
