"""shop: a small existing application that adds worksync_sa to run a nightly job.

Every copy of the shop runs the same cron, but invoices must go out once a
night, not once per copy. ``jobs.py`` shows the few lines that take.

* ``models.py``: the shop's own tables and metadata (worksync_sa's table is not here);
* ``db.py``: which database, and the shop's engine;
* ``jobs.py``: the nightly ``send_invoices`` work, a scheduler pass and a worker claim;
* ``__main__.py``: ``python -m shop demo | serve``.
"""
