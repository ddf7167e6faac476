"""MkDocs hooks (mkdocs.yml): the docstrings' reStructuredText habits, shown plainly.

The package's docstrings name other objects with Sphinx roles (``:meth:`tick```) and end a
paragraph before a code block with ``::``. mkdocstrings hands them on as Markdown, where
the role's name would stay in front of the code and the ``::`` would show as typed.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):(?=<code>)")
LITERAL = re.compile(r"::</p>")


def on_page_content(html: str, **kwargs: Any) -> str:
    """``:meth:`tick``` becomes ``tick`` in code; a paragraph's closing ``::`` one colon."""
    return LITERAL.sub(":</p>", ROLE.sub("", html))
