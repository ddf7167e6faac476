"""The ``worksync`` command line (also ``python -m worksync_sa``).

One module per command (``migrations``: migrate and check; ``schedule``;
``work``; ``status``; ``web``; ``prune``; ``demo``), what they share in
``options`` (database and table resolution, masking, logging), signal
handling in ``stopping`` and text rendering in ``text``. ``main`` builds the parser and
turns every failure into an exit code and one line on stderr.
"""

from .main import main as main

__all__ = ["main"]
