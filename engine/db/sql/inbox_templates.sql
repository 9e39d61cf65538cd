-- Templates as the inbox lists and previews them (engine/inbox/templates_view.py).

-- name: list_templates
SELECT id, name, language, category, status, components
FROM templates
WHERE tenant_id = $1 AND ($2::text IS NULL OR upper(status) = upper($2))
ORDER BY name, language, id
LIMIT 1000;

-- name: get_template
SELECT id, name, language, category, status, components FROM templates WHERE tenant_id = $1 AND id = $2;
