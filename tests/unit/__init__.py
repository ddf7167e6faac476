"""The unit tier: decisions that need no database server, run in seconds.

The package's cores (``_run.attempts``, ``_core.reconcile``, ``_core.passes``, ``_core.claims``,
``_core.worker``, ``_run.retry``) are generators of steps that a blocking or an asyncio
runner performs. These tests play the runner: they send back scripted answers
and check the steps and results against the rules the docstrings, the README
and CONTRIBUTING.md state. Nothing here opens a connection or mocks one.

Run it alone with ``python -m pytest -q -p no:cacheprovider tests/unit``: a
few seconds, with only the core dependencies and pytest installed (no
greenlet, no database driver, no web extra).
"""
