"""Run a stage on Kafka: aiokafka's batch API in, the one checkpoint order out.

One consumer group per stage. ``getmany`` hands over batches of every assigned
partition; the stage answers with a :class:`~pipeline.runtime.stage.Step`, which
:func:`~pipeline.runtime.checkpoint.checkpoint` makes durable in order before the
offsets are committed. On assignment a partition's state is read back from the
changelog and consumption resumes after the last offset that state covers, whatever
the group committed; on revocation the batch in flight finishes first (one lock).

A checkpoint that fails on a broker error is retried as it is, with backoff: every
part of a step is safe to redo (dead letters may repeat, changes and outputs are
idempotent for their readers), so nothing the stage absorbed is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from pipeline.config import Settings
from pipeline.logs import scope as log_scope
from pipeline.runtime.checkpoint import checkpoint
from pipeline.runtime.kafka import client_options, ensure_changelog
from pipeline.runtime.retry import Backoff
from pipeline.runtime.stage import Output, Stage, Step
from pipeline.runtime.state import KafkaChangelog
from pipeline.sources.dlq import DeadLetter, deliver
from pipeline.telemetry import StageMeter

__all__ = ["KafkaRunner"]

log = logging.getLogger(__name__)


class KafkaRunner:
    """One stage, one consumer group, one producer for dead letters, state and outputs."""

    def __init__(self, settings: Settings, stage: Stage, name: str, *,
                 tick_seconds: float = 1.0, report_seconds: float = 10.0) -> None:
        self.settings = settings
        self.stage = stage
        self.name = name
        self.group = f"{settings.worker.app_id}-{name}"
        self.changelog_topic = f"{settings.worker.app_id}-{name}-state"
        self.tick_seconds = tick_seconds
        self.report_seconds = report_seconds
        self.lock = asyncio.Lock()
        self.owned: set[TopicPartition] = set()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.changelog: KafkaChangelog | None = None
        self.batches = 0
        self.assigned_once = asyncio.Event()  # set at the first assignment
        self.meter = StageMeter(name, stage)  # /metrics: consumed, rejected, DLQ, lag
        # a stage that keeps no state (e.g. the OTLP bridge) needs no state topic
        self.stateful = not getattr(stage, "stateless", False)
        self._state_partitions = 0
        self._committed: dict[TopicPartition, int] = {}  # offsets committed, never backwards

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (``assigned_once`` tells when partitions came)."""
        worker = self.settings.worker
        if self.stateful:
            self._state_partitions = await ensure_changelog(
                self.settings, self.changelog_topic, self.stage.topics)
        self.producer = AIOKafkaProducer(**client_options(self.settings.kafka), acks="all",
                                         linger_ms=5, max_request_size=8 << 20,
                                         max_batch_size=1 << 20)  # changelog batches
        self.consumer = AIOKafkaConsumer(
            **client_options(self.settings.kafka), group_id=self.group,
            group_instance_id=f"{worker.instance_id}-{self.name}" if worker.instance_id
            else None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",  # aborted transactions count nowhere
            session_timeout_ms=int(worker.session_timeout_seconds * 1000),
            max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20,
        )
        self.changelog = KafkaChangelog(self.settings.kafka, self.changelog_topic, self.producer)
        await self.producer.start()
        if self.stateful:
            await self._see_state_partitions()
        self.meter.watch()
        try:
            self.consumer.subscribe(list(self.stage.topics), listener=_Listener(self))
            await self.consumer.start()
            try:
                log.info("%s consuming %s (group %s)", self.name, ", ".join(self.stage.topics),
                         self.group)
                await self._loop(stop)
            finally:
                await self.consumer.stop()
        finally:
            self.meter.close()
            await self.producer.stop()

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_seconds
        next_report = loop.time() + self.report_seconds
        size = self.settings.worker.process_batch_size
        while not stop.is_set():
            wait = max(0.0, min(next_tick - loop.time(), 0.5))
            batch = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=size)
            async with self.lock:
                step, ends = Step(), {}
                wall = time.time()
                for tp, records in batch.items():
                    # records of a partition that moved away meanwhile are the new owner's;
                    # ones fetched before this worker's own seek are skipped by the state
                    if records and tp in self.owned:
                        with log_scope(stage=self.name, topic=tp.topic, partition=tp.partition,
                                       offset=records[0].offset):  # JSON logs: the batch's start
                            part = self.stage.on_batch(tp.topic, tp.partition, records, wall)
                        self.meter.batch(tp.topic, len(records), part.dead_letters)
                        step.extend(part)
                        ends[tp] = records[-1].offset + 1
                if loop.time() >= next_tick:
                    caught = await self._caught_up()
                    ticked = self.stage.on_tick(wall, _lookup(caught))
                    self.meter.rejected(ticked.dead_letters)
                    step.extend(ticked)
                    next_tick = loop.time() + self.tick_seconds
                if step or ends:
                    if not await self._checkpoint(step, ends, stop):
                        return  # stopping with a step not durable: the restart redoes it
                    self.batches += bool(ends)
            if loop.time() >= next_report:
                log.info("%s: %s", self.name, _summary(self.stage))
                next_report = loop.time() + self.report_seconds

    async def _see_state_partitions(self, attempts: int = 50) -> None:
        """Until the producer's metadata has every state partition (a grown topic shows
        its new partitions after a moment; a write to one unseen would be refused)."""
        assert self.producer is not None
        client = self.producer.client
        for _ in range(attempts):
            await client.force_metadata_update()
            seen = client.cluster.partitions_for_topic(self.changelog_topic) or ()
            if len(seen) >= self._state_partitions:
                return
            await asyncio.sleep(0.2)
        log.warning("%s: the producer sees %d of %d partitions of %s", self.name, len(seen),
                    self._state_partitions, self.changelog_topic)

    # ------------------------------------------------------------------ checkpoint
    async def _checkpoint(self, step: Step, ends: dict[TopicPartition, int],
                          stop: asyncio.Event) -> bool:
        """The step, in the checkpoint order; retried whole on a broker error."""
        assert self.changelog is not None
        backoff = Backoff(first=0.5, cap=self.settings.worker.sink_retry_max_seconds)
        while True:
            try:
                await checkpoint(step, dead_letters=self._dead_letters,
                                 changelog=self.changelog, send=self._send,
                                 commit=lambda: self._commit(ends))
                return True
            except (KafkaError, OSError, TimeoutError) as exc:
                delay = backoff.next()
                log.warning("%s checkpoint failed (retry in %.1fs): %s", self.name, delay, exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return False
            except TimeoutError:
                pass

    async def _dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        producer, topic = self.producer, self.settings.topics.dlq
        assert producer is not None

        async def send(letter: DeadLetter) -> Any:
            return await (await producer.send(topic, letter.value, key=letter.key,
                                              headers=list(letter.headers)))

        await deliver(letters, send, self.settings.worker.sink_retry_max_seconds)
        self.meter.delivered(len(letters))

    async def _send(self, outputs: Sequence[Output]) -> None:
        producer = self.producer
        assert producer is not None
        futures = [await producer.send(o.topic, o.value, key=o.key, partition=o.partition,
                                       headers=list(o.headers) or None) for o in outputs]
        await asyncio.gather(*futures)

    async def _commit(self, ends: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        mine = {tp: offset for tp, offset in ends.items()
                if tp in self.owned and offset > self._committed.get(tp, -1)}
        if not mine:
            return
        try:
            await self.consumer.commit(mine)
            self._committed.update(mine)
        except CommitFailedError as exc:  # a rebalance took them; the state covers them
            log.warning("%s: offset commit after a durable checkpoint failed (the next "
                        "owner resumes from the state): %s", self.name, exc)

    async def _caught_up(self) -> dict[tuple[str, int], bool]:
        """Per owned partition: nothing readable left (a quiet partition may then advance
        its watermark with the wall clock; one with a backlog is slow, not idle). Readable
        ends at the last stable offset: records of an open transaction are not readable
        yet. The lag seen on the way (that end - position) goes to ``/metrics``."""
        assert self.consumer is not None
        out, lags = {}, {}
        for tp in self.owned:
            end = self.consumer.last_stable_offset(tp)
            if end is None:
                end = self.consumer.highwater(tp)
            try:
                position = await self.consumer.position(tp)
            except Exception:  # not (or no longer) assigned
                continue
            out[tp.topic, tp.partition] = end is not None and position >= end
            if end is not None:
                lags[tp.topic, tp.partition] = max(0, end - position)
        self.meter.lag(lags)
        return out

    # ------------------------------------------------------------------ rebalance
    async def assigned(self, partitions: set[TopicPartition]) -> None:
        assert self.consumer is not None and self.changelog is not None
        async with self.lock:
            # one read of the changelog for the whole assignment (topics sharing a partition
            # number share its state)
            started = time.monotonic()
            numbers = {tp.partition for tp in partitions}
            states: dict[int, dict[str, bytes]] = {p: {} for p in numbers}
            if self.stateful and numbers:
                if max(numbers) >= self._state_partitions:  # the source grew meanwhile
                    self._state_partitions = await ensure_changelog(
                        self.settings, self.changelog_topic, self.stage.topics,
                        at_least=max(numbers) + 1)
                    await self._see_state_partitions()
                states = await self.changelog.load_many(numbers)
            for tp in sorted(partitions):
                resume = self.stage.on_assign(tp.topic, tp.partition, states[tp.partition])
                self._committed.pop(tp, None)
                if resume is not None:  # where the durable state ends, whatever was committed
                    self.consumer.seek(tp, resume)
                    self._committed[tp] = resume  # a batch fetched before the seek never
                    # commits below what the state already covers
                self.owned.add(tp)
        self.assigned_once.set()
        log.info("%s: assigned %s (state of %d partition(s) read in %.2fs)", self.name,
                 _names(partitions), len(states), time.monotonic() - started)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight finishes its checkpoint first
            step = Step()
            for tp in partitions:
                if tp in self.owned:
                    step.extend(self.stage.on_revoke(tp.topic, tp.partition) or Step())
                    self.owned.discard(tp)
            if step:  # the last state, durable before the next owner reads it
                await self._checkpoint(step, {}, asyncio.Event())
        if partitions:
            log.info("%s: revoked %s", self.name, _names(partitions))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: KafkaRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.runner.assigned(set(assigned))


def _lookup(caught: dict[tuple[str, int], bool]) -> Callable[[str, int], bool]:
    return lambda topic, partition: caught.get((topic, partition), False)


def _names(partitions: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"


def _summary(stage: Stage) -> str:
    summary = getattr(stage, "summary", None)
    return summary() if callable(summary) else "running"
