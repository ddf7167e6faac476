"""What the optional ``web`` extra brings, and the error that says how to get it.

The status page is the only part of the package with third-party web
dependencies, so a plain ``pip install worksync_sa`` must keep working
without them; importing the page without them should say what to install
rather than leave a bare ``No module named 'starlette'``.
"""

from __future__ import annotations

EXTRA_MODULES = frozenset(
    {"starlette", "jinja2", "uvicorn", "anyio", "markupsafe", "prometheus_client"}
)
INSTALL_HINT = "pip install 'worksync_sa[web]'"


def missing_extra(exc: ModuleNotFoundError) -> ModuleNotFoundError | None:
    """The error to raise when ``exc`` is a module of the web extra, else None."""
    top = (exc.name or "").partition(".")[0]
    if top not in EXTRA_MODULES:
        return None
    return ModuleNotFoundError(
        f"the worksync status page needs {top}, which is not installed: {INSTALL_HINT}",
        name=exc.name,
    )
