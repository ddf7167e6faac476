"""The read-only status page: the ledger as HTML and JSON, an ASGI app a host can mount.

Needs the ``web`` extra (``pip install 'worksync_sa[web]'``). ``worksync web``
serves it; ``app(engine)`` returns it for FastAPI or Starlette to mount.
"""

from ._extra import missing_extra

try:
    from .app import StatusPage as StatusPage
    from .app import app as app
except ModuleNotFoundError as exc:  # the extra is not installed: say how to get it
    better = missing_extra(exc)
    if better is None:
        raise
    raise better from exc

__all__ = ["StatusPage", "app"]
