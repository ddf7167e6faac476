"""The SQL layer: every statement the package sends, built with SQLAlchemy Core, no I/O.

One module per feature (``claims``, ``schedule``, ``maintenance``, ``ledger``,
``page``), each holding that feature's statements on all three databases, so a
claim or a recovery is read in one file. What differs by database and is
shared between features (the server clock, shifting a time, a label's text)
is in ``dialect`` and ``elapsed``; how a statement reaches the driver is
``direct``; what a driver's error means is ``driver_errors``; what text may
enter the table is ``text``.

This layer imports neither ``_run`` nor ``_core`` (``tests/unit/test_import_direction.py``).
"""
