-- name: insert_run
INSERT INTO ai_runs (id, tenant_id, conversation_id, purpose, intent, handler, route_tier, status, error, language,
                     first_token_ms, total_ms, cost_usd)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);

-- name: insert_usage
INSERT INTO ai_usage (tenant_id, run_id, call, provider, model, input_tokens, output_tokens, cache_write_tokens,
                      cache_read_tokens, cost_usd)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: insert_source
INSERT INTO ai_run_sources (tenant_id, run_id, source, chunk_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING;

-- name: month_spend
SELECT coalesce(sum(cost_usd), 0) FROM ai_usage WHERE tenant_id = $1 AND created_at >= $2;

-- name: usage_by_day
SELECT date_trunc('day', r.created_at)::date AS day, count(*) AS runs,
       count(*) FILTER (WHERE r.status = 'declined') AS declined, sum(r.cost_usd) AS cost_usd
FROM ai_runs r WHERE r.tenant_id = $1 AND r.created_at >= now() - make_interval(days => $2)
GROUP BY 1 ORDER BY 1;

-- name: usage_by_intent
SELECT coalesce(r.intent, '-') AS intent, count(*) AS runs, sum(r.cost_usd) AS cost_usd
FROM ai_runs r WHERE r.tenant_id = $1 AND r.created_at >= now() - make_interval(days => $2)
GROUP BY 1 ORDER BY 3 DESC, 2 DESC;

-- name: usage_by_handler
SELECT coalesce(r.handler, '-') AS handler, r.route_tier, count(*) AS runs, sum(r.cost_usd) AS cost_usd,
       sum(u.input_tokens) AS input_tokens, sum(u.output_tokens) AS output_tokens,
       sum(u.cache_read_tokens) AS cache_read_tokens, sum(u.cache_write_tokens) AS cache_write_tokens
FROM ai_runs r LEFT JOIN ai_usage u ON u.run_id = r.id
WHERE r.tenant_id = $1 AND r.created_at >= now() - make_interval(days => $2)
GROUP BY 1, 2 ORDER BY 4 DESC NULLS LAST;

-- name: usage_by_source
SELECT s.source, count(DISTINCT s.run_id) AS runs, sum(r.cost_usd) AS cost_usd
FROM ai_run_sources s JOIN ai_runs r ON r.id = s.run_id
WHERE s.tenant_id = $1 AND r.created_at >= now() - make_interval(days => $2)
GROUP BY 1 ORDER BY 2 DESC;
