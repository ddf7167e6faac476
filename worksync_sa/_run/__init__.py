"""The run layer: how a service's database calls are carried out.

The cores (``_core``) yield steps (``steps.Call``); a runner does them, on
held autocommit connections (``lanes``), retried as ``attempts`` and
``retry`` decide, behind SQLite's writers' lock (``writelock``). The blocking
runner (``blocking``) and the asyncio one (``async_runner``) differ only in
how they wait. ``identity`` and ``process`` say who this process is, fork
included.

This layer imports ``_sql`` but never ``_core`` (``tests/unit/test_import_direction.py``).
"""
