"""The one checkpoint order every stage's output goes through (see runtime/stage.py).

dead letters acked → state changes acked → outputs acked → ``done`` → offsets committed.
Each step waits for the one before it, so whatever a crash interrupts is redone from
durable state, never skipped: nothing leaves before the state that produced it is in
the changelog, and no offset is committed before everything it covers is durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from pipeline.runtime.stage import Output, Step
from pipeline.runtime.state import Changelog
from pipeline.sources.dlq import DeadLetter

__all__ = ["checkpoint"]


async def checkpoint(
    step: Step,
    *,
    dead_letters: Callable[[Sequence[DeadLetter]], Awaitable[object]],
    changelog: Changelog,
    send: Callable[[Sequence[Output]], Awaitable[object]],
    commit: Callable[[], Awaitable[object]],
) -> None:
    """Make ``step`` happen, in order; each callable returns once its part is durable."""
    if step.dead_letters:
        await dead_letters(step.dead_letters)
    for partition, changes in step.changes.items():
        if changes:
            await changelog.write(partition, changes)
    if step.outputs:
        await send(step.outputs)
    for done in step.done:
        done()
    await commit()
