"""Thin Ray actor classes: they hold state and call ``engine``; all logic lives in ``engine``."""

NAMESPACE = "parlo"
