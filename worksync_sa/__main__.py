"""``python -m worksync_sa``: the ``worksync`` command (see :mod:`worksync_sa.cli`).

Kept thin: the console script points at :func:`main` here, and importing
this module must not run anything (``demo``'s worker processes import it).
"""

from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
