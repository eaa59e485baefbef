"""The model worker: one thread owns the model; requests reach it through a bounded queue.

A request becomes a `Job`. `submit` refuses it at once when the queue is full (the server answers
503) so an overloaded server fails fast instead of piling up latency. The worker takes the oldest
job and, when decoding settings allow, batches the jobs queued behind it with it: one forward pass
serves them all, which is where throughput under load comes from. A job whose seed fixes its
sampling runs alone, so the same seed gives the same reply whatever else is queued.

Output flows back through `Job.emit`, called on the worker thread. A client that goes away sets
`Job.closed`: a queued job is then dropped and a running one stops being decoded for.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from smalto.inference import Sampling
from smalto.pipeline import Pipeline


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


@dataclass(eq=False)
class Job:
    kind: str  # "chat": emits ("tokens", [one id per row]) per step; "draw": emits ("images", [arrays])
    prompts: list[list[int]]  # chat: a prompt per choice; draw: a text prompt's ids per image
    max_new_tokens: int
    sampling: Sampling
    emit: Callable[[tuple], None]  # also gets ("done",) at the end, or ("error", message)
    # Builds the real prompts on the worker's thread (torch work, e.g. encoding images) when
    # `prompts` holds placeholders of the right length.
    prepare: Callable[[], list[list[int]]] | None = None
    # Work of its own, run alone on the worker's thread and emitting its own events (test-time
    # compute: thinking, votes, best-of-N drawings).
    work: Callable[[Job], None] | None = None
    closed: threading.Event = field(default_factory=threading.Event)

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share a batch; None runs alone."""
        s = self.sampling
        if self.work is not None or (s.temperature > 0 and s.seed is not None):
            return None
        return (self.kind, s.guidance, s.temperature, s.top_k, s.top_p) if s.temperature > 0 else \
            (self.kind, s.guidance, "greedy")


class Worker:
    """background=True runs the loop in a thread of its own; otherwise call `run()` from the
    thread that should own the model. `smalto serve` gives it the main thread: torch's OpenMP
    pool runs about 1.7× faster there than from a second thread (one drawing: 0.18 against 0.31 s)."""

    def __init__(self, pipe: Pipeline, max_queue: int = 64, max_batch: int = 16, background: bool = True):
        self.pipe = pipe
        self.max_queue = max_queue
        self.max_batch = max_batch  # rows decoded together
        self.served = 0
        self._pending: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self.run, name="smalto-worker", daemon=True)
            self._thread.start()

    @property
    def queued(self) -> int:
        with self._wake:
            return sum(not j.closed.is_set() for j in self._pending)

    @property
    def closing(self) -> bool:
        return self._closing

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closing:
                raise ShuttingDown
            self._drop_closed()
            if len(self._pending) >= self.max_queue:
                raise QueueFull
            self._pending.append(job)
            self._wake.notify()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs; `run` finishes the queued ones and returns (a background thread is
        waited for)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the worker thread

    def _drop_closed(self) -> None:
        live = [j for j in self._pending if not j.closed.is_set()]
        if len(live) != len(self._pending):
            self._pending = deque(live)

    def run(self) -> None:
        """The loop: take jobs and run them until `close` is called and the queue is empty."""
        while True:
            with self._wake:
                self._drop_closed()
                while not self._pending and not self._closing:
                    self._wake.wait()
                    self._drop_closed()
                if not self._pending:
                    return
                batch = self._take()
            try:
                for job in batch:
                    if job.prepare is not None:
                        job.prompts, job.prepare = job.prepare(), None
                if batch[0].work is not None:
                    batch[0].work(batch[0])
                else:
                    self._draw(batch) if batch[0].kind == "draw" else self._chat(batch)
                for job in batch:
                    job.emit(("done",))
            except Exception as e:  # a bug must not kill the worker; the clients hear about it
                for job in batch:
                    job.emit(("error", f"{type(e).__name__}: {e}"))
            self.served += len(batch)

    def _take(self) -> list[Job]:
        """The oldest job, with the queued jobs that can share its batch (called under the lock)."""
        first = self._pending.popleft()
        batch, key = [first], first.batch_key()
        if key is None:
            return batch
        rows = len(first.prompts)
        longest, new = max(map(len, first.prompts)), first.max_new_tokens
        context = self.pipe.context
        for job in list(self._pending):
            job_longest = max(longest, *map(len, job.prompts))
            job_new = max(new, job.max_new_tokens)
            if (job.batch_key() == key and rows + len(job.prompts) <= self.max_batch
                    and job_longest + job_new <= context):
                self._pending.remove(job)
                batch.append(job)
                rows, longest, new = rows + len(job.prompts), job_longest, job_new
        return batch

    def _chat(self, batch: list[Job]) -> None:
        prompts = [p for job in batch for p in job.prompts]
        limits = [job.max_new_tokens for job in batch for _ in job.prompts]
        spans, start = [], 0
        for job in batch:
            spans.append((start, start + len(job.prompts)))
            start += len(job.prompts)
        for step in self.pipe.reply_steps(prompts, limits, batch[0].sampling):
            tokens = step.tokens.tolist()
            live = False
            for job, (a, b) in zip(batch, spans):
                if not job.closed.is_set():
                    job.emit(("tokens", tokens[a:b]))
                    live = True
            if not live:
                return

    def _draw(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.closed.is_set()]
        if not live:
            return
        prompts = [p for job in live for p in job.prompts]
        images = self.pipe.draw(prompts, live[0].sampling)
        for job in live:
            job.emit(("images", images[:len(job.prompts)]))
            images = images[len(job.prompts):]
