"""A Tornado service that migrates its own database with Alembic, then serves it."""
