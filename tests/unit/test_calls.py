"""The two drivers of a core's generator (``_run.steps.drive``, ``drive_async``).

Both must do what the module promises: perform each yielded step, send its
result back, and throw a failed step's error into the generator where it
yielded, so the core, not the runner, decides what an error means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from datetime import datetime, timezone
from typing import Any

import pytest

from worksync_sa._run.steps import Call, drive, drive_async


def _adder() -> Generator[str, int, int]:
    """Asks for two numbers; a failed ask counts as 100."""
    first = yield "a"
    try:
        second = yield "b"
    except LookupError:
        second = 100
    return first + second


def _answers(step: str) -> int:
    return {"a": 1, "b": 2}[step]


def _failing_b(step: str) -> int:
    if step == "b":
        raise KeyError(step)
    return 1


def test_drive_sends_each_result_back_and_returns_the_generators_value() -> None:
    seen: list[str] = []

    def run(step: str) -> int:
        seen.append(step)
        return _answers(step)

    assert drive(_adder(), run) == 3
    assert seen == ["a", "b"]


def test_drive_throws_a_failed_step_into_the_generator_where_it_yielded() -> None:
    assert drive(_adder(), _failing_b) == 101


def test_drive_lets_an_error_the_generator_does_not_handle_out() -> None:
    def run(step: str) -> int:
        raise ValueError(step)

    with pytest.raises(ValueError, match="a"):
        drive(_adder(), run)


def test_a_single_call_is_driven_as_its_own_one_step() -> None:
    call: Call[int] = Call("answer", lambda conn: 42)
    seen: list[Any] = []

    def run(step: Any) -> int:
        seen.append(step)
        return 7

    assert drive(call, run) == 7
    assert seen == [call]


def test_drive_async_does_what_drive_does_by_awaiting() -> None:
    async def run(step: str) -> int:
        await asyncio.sleep(0)
        return _answers(step)

    async def failing(step: str) -> int:
        return _failing_b(step)

    assert asyncio.run(drive_async(_adder(), run)) == 3
    assert asyncio.run(drive_async(_adder(), failing)) == 101


def test_drive_async_takes_a_single_call_too() -> None:
    call: Call[str] = Call("answer", lambda conn: "unused")

    async def run(step: Any) -> str:
        assert step is call
        return "done"

    assert asyncio.run(drive_async(call, run)) == "done"


class _Suspend:
    """An awaitable that suspends its coroutine once, as a pending wait would."""

    def __await__(self) -> Generator[None, None, None]:
        yield


def test_closing_drive_async_mid_step_closes_the_steps_instead_of_failing_them() -> None:
    """A loop's coroutine closed while pending (a task collected at shutdown, say)."""
    from worksync_sa._core.worker import ROUND, WorkerCore

    core = WorkerCore(["a"], lambda claim: None, max_concurrency=1, poll="1s",
                      max_backoff="1s", clock=lambda: datetime.now(timezone.utc))  # fmt: skip
    closed: list[str] = []

    def steps() -> Generator[Any, Any, None]:
        try:
            yield from core.loop_steps("worker")
        finally:
            closed.append("steps")

    async def run(step: Any) -> Any:
        if step is ROUND:
            await _Suspend()
        return False

    coro = drive_async(steps(), run)
    coro.send(None)  # suspended in the loop's first round
    coro.close()  # raised "coroutine ignored GeneratorExit" when the loop treated it as a failure
    assert closed == ["steps"]
