"""Parlo's domain and its adapters.

This package must stay importable without Ray, FastAPI, Textual or the CLI:
actor classes and HTTP routes are thin shells around the objects defined here.
"""

__version__ = "0.1.0"
