"""Authentication: short-lived access tokens (JWT) and rotating refresh tokens."""
