"""The shop's Alembic scripts. Alembic does not need this file; it lets mypy name them apart."""
