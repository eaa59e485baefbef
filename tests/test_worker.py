"""The model worker: bounded queue, batching that changes no result, closed jobs, draining."""

import threading

import pytest

from smalto.inference import Sampling
from smalto.apps.serve.worker import Job, QueueFull, ShuttingDown, Worker


class Events:
    """Collects what the worker emits for one job; `gate` can hold the worker inside emit."""

    def __init__(self, gate: threading.Event | None = None):
        self.items, self.done, self.gate = [], threading.Event(), gate
        self.started = threading.Event()

    def __call__(self, event):
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.items.append(event)
        if event[0] in ("done", "error"):
            self.done.set()

    def tokens(self) -> list[list[int]]:
        rows = [e[1] for e in self.items if e[0] == "tokens"]
        return [list(r) for r in zip(*rows)]


def prompt(pipe, text: str) -> list[int]:
    return [pipe.vocab.bos, pipe.vocab.user, *pipe.tokenizers.text.encode(text), pipe.vocab.assistant]


def chat_job(pipe, text="hello", n=1, sampling=Sampling(), emit=None, steps=6) -> Job:
    return Job("chat", [prompt(pipe, text)] * n, steps, sampling, emit or Events())


@pytest.fixture
def worker(shipped):
    w = Worker(shipped, max_queue=2, max_batch=8)
    yield w
    w.close(10)


def test_batched_jobs_decode_exactly_as_alone(shipped, worker):
    gate = threading.Event()
    blocker = chat_job(shipped, emit=Events(gate))
    worker.submit(blocker)
    blocker.emit.started.wait(10)  # the worker is busy: the next jobs queue up and share a batch
    a, b = chat_job(shipped, "red circle", steps=10), chat_job(shipped, "two", n=2, steps=4)
    worker.submit(a)
    worker.submit(b)
    gate.set()
    assert a.emit.done.wait(30) and b.emit.done.wait(30)
    alone = shipped.engine.generate([prompt(shipped, "red circle")], 10)[0].tokens
    assert a.emit.tokens()[0][:len(alone)] == alone
    two = shipped.engine.generate([prompt(shipped, "two")], 4)[0].tokens
    assert all(row[:len(two)] == two for row in b.emit.tokens())


def test_only_unseeded_or_greedy_jobs_share_a_batch(shipped):
    greedy = chat_job(shipped).batch_key()
    assert greedy == chat_job(shipped, sampling=Sampling(seed=3)).batch_key()  # greedy ignores the seed
    assert chat_job(shipped, sampling=Sampling(1.0)).batch_key() not in (None, greedy)
    assert chat_job(shipped, sampling=Sampling(1.0, seed=3)).batch_key() is None


def test_a_full_queue_refuses_and_a_closed_job_frees_its_slot(shipped, worker):
    gate = threading.Event()
    blocker = chat_job(shipped, emit=Events(gate))
    worker.submit(blocker)
    blocker.emit.started.wait(10)
    queued = [chat_job(shipped, sampling=Sampling(1.0, seed=i)) for i in range(2)]
    for job in queued:
        worker.submit(job)
    with pytest.raises(QueueFull):
        worker.submit(chat_job(shipped))
    queued[0].closed.set()  # its client went away
    assert worker.queued == 1
    late = chat_job(shipped)
    worker.submit(late)
    gate.set()
    assert late.emit.done.wait(30) and queued[1].emit.done.wait(30)
    assert queued[0].emit.items == []  # never decoded


def test_a_closed_running_job_stops_being_decoded(shipped, worker):
    seen = Events()
    job = chat_job(shipped, steps=40, sampling=Sampling(1.0, seed=0))

    def emit(event):
        seen(event)
        job.closed.set()  # the client leaves after the first token

    job.emit = emit
    worker.submit(job)
    assert seen.done.wait(30)
    assert [e[0] for e in seen.items] == ["tokens", "done"]


def test_close_drains_queued_jobs_then_refuses(shipped):
    w = Worker(shipped, max_queue=4)
    jobs = [chat_job(shipped, sampling=Sampling(1.0, seed=i)) for i in range(3)]
    for job in jobs:
        w.submit(job)
    w.close(30)
    assert all(job.emit.done.is_set() for job in jobs)
    with pytest.raises(ShuttingDown):
        w.submit(chat_job(shipped))


def test_a_failing_job_reports_an_error_and_the_worker_goes_on(shipped, worker):
    bad = Job("chat", [[]], 4, Sampling(), Events())  # an empty prompt: the engine refuses it
    worker.submit(bad)
    assert bad.emit.done.wait(30) and bad.emit.items[-1][0] == "error"
    good = chat_job(shipped)
    worker.submit(good)
    assert good.emit.done.wait(30) and good.emit.items[-1] == ("done",)


def test_drawing_jobs_share_a_batch_and_keep_their_images(shipped, worker):
    ids = shipped.tokenizers.text.encode("a small red circle at the center")
    gate = threading.Event()
    blocker = chat_job(shipped, emit=Events(gate))
    worker.submit(blocker)
    blocker.emit.started.wait(10)
    jobs = [Job("draw", [ids] * n, 65, Sampling(0.0, guidance=1.5), Events()) for n in (2, 3)]
    for job in jobs:
        worker.submit(job)
    gate.set()
    alone = shipped.draw([ids], Sampling(0.0, guidance=1.5))[0]
    for job, n in zip(jobs, (2, 3)):
        assert job.emit.done.wait(30)
        images = [e for e in job.emit.items if e[0] == "images"][0][1]
        assert len(images) == n and all(abs(im.astype(int) - alone).max() <= 1 for im in images)
