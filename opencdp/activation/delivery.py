"""The delivery loop: one coordinating thread, and per destination its own workers.

The coordinator is the only writer of delivery state. Each turn it runs queued commands (replay, confirm),
settles finished attempts, picks up configuration changes, then claims due rows for each destination that has
a free worker and hands them, as batches with their payloads, to that destination's own thread pool
(``concurrency`` threads). A destination that is down or hangs ties up only its own workers, each bounded by
its timeout; the coordinator never waits on a send, so healthy destinations keep their pace.

At-least-once: a row is marked done only after its plug-in's ``send`` returned (the peer acknowledged). A crash
before that leaves it pending, and it is sent again, with the same idempotency key, when delivery restarts.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from opencdp.activation import outbox
from opencdp.activation.destinations import DestinationStore
from opencdp.activation.payloads import ROW, assemble
from opencdp.activation.plugins import build
from opencdp.activation.plugins.base import Delivery, Outcome, Plugin, classify
from opencdp.model.destinations import Destination, DestinationBase
from opencdp.store.engine import Engine

log = logging.getLogger("opencdp.activation")
T = TypeVar("T")
REFRESH_SECONDS = 0.5
FORGET_SECONDS = 3600.0
"""How often delivered rows past the retention are removed (the first turn does it too)."""
"""How often the coordinator looks for destination changes made elsewhere (another process, the CLI)."""
PREFETCH = 4
"""Batches queued per worker of a destination: its workers take the next batch as soon as one is sent, without
waiting for the coordinator's next turn (each turn costs a few queries, so it claims work for several rounds)."""
GATHER_SECONDS = 0.01
"""Once woken, the coordinator waits this long for more outcomes, so one turn settles many (a turn's writes cost
the same for one outcome as for a hundred)."""


@dataclass
class Lane:
    """One destination's plug-in and workers."""

    config: Destination
    version: int
    plugin: Plugin
    pool: ThreadPoolExecutor
    queued: dict[Future[None], tuple[int, ...]] = field(default_factory=dict)
    """Submitted batches not finished yet, with their delivery ids."""

    def submit(self, fn: Callable[..., None], *args: Any, ids: tuple[int, ...]) -> None:
        future = self.pool.submit(fn, *args)
        self.queued[future] = ids
        future.add_done_callback(lambda f: self.queued.pop(f, None))

    def withdraw(self) -> list[tuple[int, ...]]:
        """Cancel the batches no worker has started; returns their delivery ids (they go back to the outbox's
        due rows: nothing was sent)."""
        return [ids for future, ids in list(self.queued.items()) if future.cancel()]

    def close(self) -> None:
        """Stop taking batches; the plug-in is closed once the batches already being sent have finished (closing
        it under them would fail, and so resend, what the peer may be about to acknowledge)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

        def finish() -> None:
            self.pool.shutdown(wait=True)
            try:
                self.plugin.close()
            except Exception:  # closing is best effort
                log.debug("closing destination %s failed", self.config.name, exc_info=True)

        threading.Thread(target=finish, name=f"opencdp-close-{self.config.name}", daemon=True).start()


@dataclass
class Counters:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    attempts: int = 0
    by_destination: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, destination: str, state: str, n: int) -> None:
        self.attempts += 1
        name = {"done": "delivered", "pending": "retrying", "dead": "dead"}[state]
        setattr(self, name, getattr(self, name) + n)
        per = self.by_destination.setdefault(destination, {"delivered": 0, "retrying": 0, "dead": 0})
        per[name] += n


class Deliverer:
    def __init__(self, engine: Engine, store: DestinationStore, *, tick: float = 0.05, seed: int | None = None,
                 retention: timedelta | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.store = store
        self.tick = tick
        self.retention = retention
        """How long delivered rows are kept (None: for ever)."""
        self._forgotten = -FORGET_SECONDS
        self.rng = random.Random(seed)  # noqa: S311  (backoff jitter, not a secret)
        self.counters = Counters()
        self._lanes: dict[str, Lane] = {}
        self._in_flight: dict[str, set[int]] = {}
        self._busy: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        """Batches failed transiently in a row, per destination."""
        self._paused: dict[str, float] = {}
        """Per destination, when (monotonic) it may be claimed from again after repeated failures."""
        self._results: queue.SimpleQueue[outbox.Attempted] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[tuple[Callable[[Engine], Any], Future[Any]]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refreshed = 0.0
        self._step_lock = threading.Lock()

    # -- running ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="opencdp-delivery", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.step()
            except Exception as exc:  # an engine hiccup: logged, and the next turn tries again
                log.warning("delivery: %s (will retry)", str(exc).splitlines()[0])
                self._stop.wait(1.0)
            if self._wake.wait(self.tick):
                self._stop.wait(GATHER_SECONDS)

    def call(self, command: Callable[[Engine], T]) -> T:
        """Run ``command`` on the coordinator (the one writer of delivery state) and return its result."""
        if not self.running:
            with self._step_lock:
                return command(self.engine)
        future: Future[T] = Future()
        self._commands.put((command, future))
        self._wake.set()
        return future.result(timeout=120)

    def refresh_soon(self) -> None:
        self._refreshed = 0.0
        self._wake.set()

    # -- one turn ---------------------------------------------------------------------------------------------
    def step(self) -> int:
        """Commands, results, configuration, then claims; returns how many batches it started."""
        with self._step_lock:
            while True:
                try:
                    command, future = self._commands.get_nowait()
                except queue.Empty:
                    break
                try:
                    future.set_result(command(self.engine))
                except Exception as exc:
                    future.set_exception(exc)
            self._settle_finished()
            if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                self._refresh()
            if self.retention is not None and time.monotonic() - self._forgotten > FORGET_SECONDS:
                self._forgotten = time.monotonic()
                forgotten = outbox.forget_delivered(self.engine, datetime.now(UTC) - self.retention)
                if forgotten:
                    log.info("delivery: %d delivered rows older than %s removed from the outboxes", forgotten,
                             self.retention)  # fmt: skip
            return self._claim()

    def _settle_finished(self) -> None:
        finished: list[tuple[outbox.Attempted, DestinationBase]] = []
        while True:
            try:
                done = self._results.get_nowait()
            except queue.Empty:
                break
            lane = self._lanes.get(done.destination)
            finished.append((done, lane.config if lane else self.store.get(done.destination)))
        if not finished:
            return
        states = outbox.settle(self.engine, finished, self.rng)
        for (done, config), state in zip(finished, states, strict=True):
            self._busy[done.destination] -= 1
            self._in_flight[done.destination].difference_update(done.delivery_ids)
            self.counters.add(done.destination, state, len(done.delivery_ids))
            self._trip(done, config)

    def _trip(self, done: outbox.Attempted, config: DestinationBase) -> None:
        """A destination whose last ``concurrency`` batches all failed transiently (down, refusing connections)
        is not claimed for a while (backoff, growing while it stays down); its rows keep their own schedule.
        A delivered batch resets it. This keeps a dead peer from costing every turn a claim, payloads and
        failure writes."""
        name = done.destination
        if done.outcome.status != "transient":
            self._failures[name] = 0
            return
        self._failures[name] = failures = self._failures.get(name, 0) + 1
        if failures >= config.concurrency:
            rounds = failures // config.concurrency
            self._paused[name] = time.monotonic() + outbox.backoff(rounds, config, done.outcome.retry_after, self.rng)

    def _refresh(self) -> None:
        self._refreshed = time.monotonic()
        versions = self.store.versions()
        for name in [n for n, lane in self._lanes.items() if versions.get(n) != lane.version]:
            lane = self._lanes.pop(name)
            for ids in lane.withdraw():  # queued under the old configuration: claimed again under the new one
                self._busy[name] -= 1
                self._in_flight[name].difference_update(ids)
            lane.close()
        changed = [n for n in versions if n not in self._lanes]
        if not changed:
            return
        configs = self.store.all()
        for name in changed:
            config, version = configs[name]
            pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix=f"opencdp-{name}")
            self._lanes[name] = Lane(config, version, build(config), pool)
            self._in_flight.setdefault(name, set())
            self._busy.setdefault(name, 0)

    def _claim(self) -> int:
        now = time.monotonic()
        free = {n: lane.config.concurrency * PREFETCH - self._busy[n] for n, lane in self._lanes.items()
                if lane.config.enabled and self._paused.get(n, 0.0) <= now}  # fmt: skip
        free = {n: f for n, f in free.items() if f > 0}
        if not free:
            return 0
        limit = max(len(self._in_flight[n]) + f * self._lanes[n].config.batch_size for n, f in free.items())
        names = sorted(free)
        rows = [dict(zip(ROW, r, strict=True)) for r in self.engine.fetch_all(
            outbox.claim_sql(len(names)), (datetime.now(UTC), *names, limit))]  # fmt: skip
        picked: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            name = row["destination"]
            lane = self._lanes[name]
            taken = picked.setdefault(name, [])
            if (
                int(row["delivery_id"]) not in self._in_flight[name]
                and len(taken) < free[name] * lane.config.batch_size
            ):
                taken.append(row)
        chosen = [r for taken in picked.values() for r in taken]
        if not chosen:
            return 0
        payloads = assemble(self.engine, chosen, {n: lane.config.traits for n, lane in self._lanes.items()})
        started = 0
        for name, taken in picked.items():
            lane = self._lanes[name]
            size = lane.config.batch_size
            for i in range(0, len(taken), size):
                batch = taken[i : i + size]
                deliveries = [Delivery(int(r["delivery_id"]), r["idempotency_key"], payloads[int(r["delivery_id"])])
                              for r in batch]  # fmt: skip
                attempts = tuple(int(r["attempts"]) for r in batch)
                self._in_flight[name].update(d.delivery_id for d in deliveries)
                self._busy[name] += 1
                lane.submit(self._attempt, name, lane.plugin, deliveries, attempts,
                            ids=tuple(d.delivery_id for d in deliveries))  # fmt: skip
                started += 1
        return started

    def _attempt(self, name: str, plugin: Plugin, batch: list[Delivery], attempts: tuple[int, ...]) -> None:
        """On the destination's worker: prepare and send one batch, then hand the outcome to the coordinator."""
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            plugin.send(plugin.prepare(batch))
            outcome = Outcome("delivered")
        except BaseException as exc:
            outcome = classify(exc)
        took = (time.perf_counter() - t0) * 1000
        self._results.put(
            outbox.Attempted(name, tuple(d.delivery_id for d in batch), attempts, outcome, started_at, took)
        )
        self._wake.set()

    # -- draining ---------------------------------------------------------------------------------------------
    def idle(self) -> bool:
        return not any(self._busy.values()) and self._results.empty()

    def drain(self, wait_seconds: float = 0.0) -> dict[str, Any]:
        """Deliver everything due now, and what falls due within ``wait_seconds`` (retries in backoff); returns
        what this drain delivered, retried and dead-lettered, and what is left."""
        before = Counters(self.counters.delivered, self.counters.retrying, self.counters.dead, self.counters.attempts)
        deadline = time.monotonic() + wait_seconds
        while True:
            started = self._wait_turn()
            if started or not self.idle() or self._claimable():
                continue
            due = self._next_due()
            now = datetime.now(UTC)
            resume = [t for t in list(self._paused.values()) if t > time.monotonic()]
            if resume:  # a paused destination's rows fall due when its pause ends
                ends = now + timedelta(seconds=min(resume) - time.monotonic())
                due = ends if due is None else min(due, ends)
            if due is None and self._claimable():
                continue  # a retry fell due between the two looks
            if due is None or due > now + timedelta(seconds=max(0.0, deadline - time.monotonic())):
                break  # nothing left but held rows (and rows behind them), or retries due after the deadline
            time.sleep(min(max((due - now).total_seconds(), 0.0), 0.5))
        left = self.engine.fetch_all(
            "SELECT state, count(*) FROM outbox WHERE state IN ('pending', 'held') GROUP BY state"
        )
        return {
            "delivered": self.counters.delivered - before.delivered,
            "retried": self.counters.retrying - before.retrying,
            "dead": self.counters.dead - before.dead,
            "left": {state: int(n) for state, n in left},
        }

    def _wait_turn(self) -> int:
        """One coordinator turn: taken here when no coordinator thread runs, else waited for."""
        if self.running:
            self._wake.set()
            time.sleep(self.tick)
            return 0
        started = self.step()
        if not started and not self.idle():
            if self._wake.wait(self.tick):
                time.sleep(GATHER_SECONDS)
            self._wake.clear()
        return started

    def _enabled(self) -> list[str]:
        """Destinations that may be claimed from now (enabled, not paused after repeated failures)."""
        now = time.monotonic()
        return sorted(n for n, lane in list(self._lanes.items())
                      if lane.config.enabled and self._paused.get(n, 0.0) <= now)  # fmt: skip

    def _claimable(self) -> bool:
        """Whether a row could be claimed now (a coordinator thread, if one runs, is about to)."""
        names = self._enabled()
        if not names:
            return False
        rows = self.engine.fetch_all(outbox.claim_sql(len(names)), (datetime.now(UTC), *names, 1))
        busy = {i for ids in list(self._in_flight.values()) for i in ids}
        return any(int(r[0]) not in busy for r in rows)

    def _next_due(self) -> datetime | None:
        """When the next retry in backoff falls due (None: no row waits for a time)."""
        names = self._enabled()
        if not names:
            return None
        row = self.engine.fetch_one(
            f"SELECT min(next_at) FROM outbox WHERE state = 'pending' AND next_at > ? "
            f"AND destination IN ({', '.join('?' * len(names))})",
            (datetime.now(UTC), *names),
        )
        return row[0] if row and row[0] is not None else None
