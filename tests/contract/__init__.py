"""The contract suite: every behaviour of the services, on every backend, for both twins.

A module here takes the ``db`` fixture and gets, for each of SQLite, MariaDB
and PostgreSQL, an empty table of its own and the blocking or the asyncio
services (``tests/twins.py``) with the blocking signatures. The fixture lives
once in ``conftest.py`` beside this file; nothing here chooses a twin itself.
"""
