"""MkDocs hooks (mkdocs.yml): what Python-Markdown would show as typed, shown plainly.

The package's docstrings name other objects with Sphinx roles (``:meth:`tick```) and end a
paragraph before a code block with ``::``. mkdocstrings hands them on as Markdown, where
the role's name would stay in front of the code and the ``::`` would show as typed. And a
table cell's code escapes its pipes (``\\|``) for GitHub, which Python-Markdown keeps.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):(?=<code>)")
LITERAL = re.compile(r"::</p>")
CODE = re.compile(r"<code>.*?</code>", re.S)


def on_page_content(html: str, **kwargs: Any) -> str:
    """``:meth:`tick``` becomes ``tick`` in code; a paragraph's closing ``::`` one colon;
    ``\\|`` in code a pipe."""
    html = LITERAL.sub(":</p>", ROLE.sub("", html))
    return CODE.sub(lambda code: code.group().replace("\\|", "|"), html)
