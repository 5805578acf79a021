"""The service side of aigc (issue 27): its database, API keys and usage ledger; the HTTP service comes later.

Nothing here imports a model; ``aigc.serve.db`` imports psycopg only when a PostgreSQL URL is opened.
"""
