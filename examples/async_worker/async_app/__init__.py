"""async_app: an asyncio service (FastAPI-style) that runs its cron jobs through worksync_sa.

Every copy of the service runs the same works; worksync_sa's table makes sure
each tick runs at most ``max_run`` times across all copies.

* ``jobs.py``: the works, and what running one does (a row in the app's own table);
* ``db.py``: which database, the app's ``AsyncEngine``, and the schema step;
* ``app.py``: ``lifespan(app)``, the scheduler and the background worker task;
* ``__main__.py``: ``python -m async_app [--seconds N] [--migrate-only]``.
"""
