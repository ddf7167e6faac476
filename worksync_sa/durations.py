"""Go-style durations (``90s``, ``5m``, ``1h30m``) and ``@every`` specs.

The original configures its scheduler with robfig/cron strings such as
``@every 2s``; keeping that syntax lets a config move over unchanged. One
unit is added to Go's: ``d`` for days, since retention is counted in days.
Arithmetic is exact (fractions), so ``0.1s`` is 100 ms, not 99.999 ms.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 1_000_000_000),
    "us": Fraction(1, 1_000_000),
    "µs": Fraction(1, 1_000_000),  # micro sign
    "μs": Fraction(1, 1_000_000),  # Greek mu
    "ms": Fraction(1, 1_000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
_EVERY = re.compile(r"@every\s+(\S+)")


def parse_duration(text: str, *, zero: bool = False) -> timedelta:
    """Parse a Go duration such as ``1h30m`` or ``2.5s`` into a positive ``timedelta``.

    ``zero``: also accept a zero duration (``0s``), as "that long ago" does:
    ``--since 0s`` is now. Raises ``ValueError`` naming the text when it is
    malformed, not positive (or negative, with ``zero``), or finer than a
    microsecond.
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like '90s', not {type(text).__name__}")
    spec = text.strip()
    if not spec:
        raise ValueError("duration is empty; write it like '90s', '5m' or '1h30m'")
    total = Fraction(0)
    pos = 0
    while pos < len(spec):
        part = _PART.match(spec, pos)
        if part is None:
            raise ValueError(
                f"duration {text!r} is not valid; write it like '90s', '5m' or '1h30m' "
                "(units ns, us, ms, s, m, h, d)"
            )
        total += Fraction(part.group(1)) * _UNITS[part.group(2)]
        pos = part.end()
    micros = total * 1_000_000
    if micros.denominator != 1:
        raise ValueError(f"duration {text!r} is finer than one microsecond")
    if micros < 0 or (micros == 0 and not zero):
        raise ValueError(f"duration {text!r} must be positive")
    return timedelta(microseconds=int(micros))


def parse_every(text: str) -> timedelta | None:
    """The period of an ``@every <duration>`` spec, or None if ``text`` is not one."""
    match = _EVERY.fullmatch(text.strip())
    return None if match is None else parse_duration(match.group(1))


def as_timedelta(value: timedelta | str, what: str) -> timedelta:
    """Accept a positive ``timedelta``, a Go duration or an ``@every`` spec.

    ``what`` names the setting in the error message.
    """
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"{what} must be positive, got {shown(value)}")
        return value
    if isinstance(value, str):
        try:
            every = parse_every(value)
            return every if every is not None else parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    raise ValueError(
        f"{what} must be a timedelta or a duration string like '@every 2s', "
        f"not {type(value).__name__}"
    )


def shown(value: object) -> str:
    """A value for an error message: a duration as it is typed (``10h``), anything else
    as its repr. Never ``datetime.timedelta(seconds=36000)`` or ``1 day, 0:00:00``."""
    return format_duration(value) if isinstance(value, timedelta) else repr(value)


_WRITTEN_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(delta: timedelta | None) -> str:
    """``delta`` as durations are typed (``250ms``, ``4.7s``, ``1m30s``, ``2d3h``); None is ``-``.

    One writer for the commands and the status page, so both read alike.
    Below a minute it keeps milliseconds; above, whole seconds. Negative
    values (a claim that started before its tick) keep their sign.
    """
    if delta is None:
        return "-"
    sign = "-" if delta < timedelta(0) else ""
    seconds = abs(delta).total_seconds()
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{sign}{millis}ms" if millis else "0s"
    if seconds < 60:
        return f"{sign}{f'{seconds:.3f}'.rstrip('0').rstrip('.')}s"
    rest = round(seconds)
    parts = []
    for unit, size in _WRITTEN_UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
