"""PostgreSQL access: the connection pool, named SQL blocks and the migration runner."""
