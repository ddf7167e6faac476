"""The page's buttons: one operator action per POST, read from a small JSON body.

The guard has already checked the write token, the origin and the content
type (:mod:`.guard`); what is left is the body, which comes from whoever
holds that token: it is read up to :data:`MAX_BODY` bytes, every field is
checked as the command line checks it, and a bad one is a 400 naming the
field before anything is written. The actions themselves are the
command line's (:class:`worksync_sa.Operator`), so a click and a command
change the same state in the database and leave the same ledger entry.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .._sql.text import check_text
from .params import BadRequest, Moment, parse_moment

MAX_BODY = 4_096
"""Most bytes an action's body may have; every field of ours fits in far less."""
REASON_MAX = 255
ACTIONS = ("pause", "resume", "run-now", "retry")
WHO_MAX = 64


class TooLarge(Exception):
    """The body ran past :data:`MAX_BODY` (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One checked action: what, on which work, and the fields that action takes."""

    action: str
    name: str
    reason: str
    until: Moment | None = None
    tick: str | None = None
    past_grace: bool = False


async def read_body(chunks: AsyncIterator[bytes]) -> bytes:
    """The body, refused past :data:`MAX_BODY` without reading the rest into memory."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge(f"an action's body is at most {MAX_BODY} bytes")
    return bytes(body)


def parse_action(action: str, body: bytes) -> ActionRequest:
    """The action a POST asks for, every field checked; BadRequest names the first bad one."""
    if action not in ACTIONS:
        raise BadRequest(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    allowed = {"name", "reason"} | {"pause": {"until"}, "retry": {"tick", "past_grace"}}.get(
        action, set()
    )
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise BadRequest(f"{action} takes no field {unknown[0]!r} (it takes {sorted(allowed)})")
    name = _text(document, "name", required=True)
    reason = _text(document, "reason", required=False)
    if len(reason) > REASON_MAX:
        raise BadRequest(f"reason is at most {REASON_MAX} characters, got {len(reason)}")
    until: Moment | None = None
    if document.get("until") not in (None, ""):
        until = parse_moment(_text(document, "until", required=True), "until")
    tick = _text(document, "tick", required=action == "retry") or None
    past_grace = document.get("past_grace", False)
    if not isinstance(past_grace, bool):
        raise BadRequest("past_grace must be true or false")
    return ActionRequest(action, name, reason, until, tick, past_grace)


def _text(document: dict[str, object], key: str, *, required: bool) -> str:
    value = document.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    if not value:
        if required:
            raise BadRequest(f"{key} is required")
        return ""
    try:
        return check_text(value, key) if key in ("name", "tick") else value
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def who(user: str, client: str | None) -> str:
    """Who acted, for the ledger: the Basic user name (or ``web``) and the client's address.

    The user name is whatever the browser's login box was given, so it is
    held to printable characters and a short length before it is stored.
    """
    shown = "".join(c for c in user if unicodedata.category(c)[0] not in "CZ" or c == " ")
    shown = shown.strip()[:WHO_MAX] or "web"
    return f"{shown} (web, {client})" if client else f"{shown} (web)"
