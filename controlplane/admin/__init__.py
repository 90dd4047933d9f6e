"""The admin REST API (FastAPI): a thin layer that converts; the work is in the core."""
