"""The core layer: every decision of the services, written once as generators of steps.

A scheduler pass (``passes``, ``reconcile``), a claim (``claims``), the
worker's loop (``worker``), recovery and pruning (``maintenance``), and how a
loop survives an outage (``outage``). None of them touches the database: each
yields steps (``_run.steps``) and is sent their results, so the blocking and
the asyncio services share them. No core imports a particular runner
(``tests/unit/test_import_direction.py``).
"""
