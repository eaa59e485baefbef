"""torchrun: two CPU processes (gloo), replicated (DDP) or sharded (FSDP2), train like one process
with the same global batch; a run resumes with another number of processes; a rank that dies
takes the run down."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from smalto.checkpoint import load_checkpoint

FLAGS = ["--preset", "shapes-micro", "--batch-size", "8", "--eval-every", "0", "--save-every", "2",
         "--precision", "fp32", "--seed", "3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def smalto(*args, processes: int = 1, **kw) -> subprocess.CompletedProcess:
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    return subprocess.run([*run, "-m", "smalto", *args], capture_output=True, text=True, timeout=300, env=ENV, **kw)


def losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def weights(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)[0].state_dict()


@pytest.mark.slow  # half a minute of two processes; the Muon + accumulation test covers the same path in make test
def test_two_processes_train_like_one_and_resume_with_another_number(tmp_path):
    one, two, mixed = tmp_path / "one", tmp_path / "two", tmp_path / "mixed"
    for out, n in ((one, 1), (two, 2)):
        done = smalto("train", "--out", str(out), "--steps", "4", *FLAGS, processes=n)
        assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("checkpoint in") == 1, "only rank 0 reports"
    meta = json.loads((two / "meta.json").read_text())
    assert meta["processes"] == {"world_size": 2, "backend": "gloo", "parallel": "ddp"}
    torch.testing.assert_close(torch.tensor(losses(two)), torch.tensor(losses(one)), rtol=1e-4, atol=1e-5)
    for name, w in weights(one).items():
        torch.testing.assert_close(weights(two)[name], w, rtol=1e-3, atol=1e-5, msg=name)
    # 2 processes to step 2, then 1 process to step 4: the same run
    assert smalto("train", "--out", str(mixed), "--steps", "4", "--pause-at", "2", *FLAGS, processes=2).returncode == 0
    resumed = smalto("train", "--out", str(mixed), "--steps", "4", "--resume", processes=1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    torch.testing.assert_close(torch.tensor(losses(mixed)), torch.tensor(losses(one)), rtol=1e-4, atol=1e-5)
    # what it wrote is an ordinary model directory
    check = subprocess.run([sys.executable, "-c", f"import smalto; print(smalto.load({str(two)!r}).caption("
                            "__import__('numpy').zeros((32, 32, 3), 'uint8')))"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]


@pytest.mark.slow  # FSDP2: twenty seconds of two processes
def test_sharded_processes_train_like_one_and_resume_unsharded(tmp_path):
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert smalto("train", "--out", str(one), "--steps", "4", *FLAGS).returncode == 0
    done = smalto("train", "--out", str(sharded), "--steps", "4", "--pause-at", "2", "--shard", *FLAGS, processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((sharded / "meta.json").read_text())["processes"]["parallel"] == "fsdp"
    resumed = smalto("train", "--out", str(sharded), "--steps", "4", "--resume", processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((sharded / "meta.json").read_text())["processes"]["parallel"] == "fsdp"
    torch.testing.assert_close(torch.tensor(losses(sharded)), torch.tensor(losses(one)), rtol=1e-4, atol=1e-5)
    for name, w in weights(one).items():
        torch.testing.assert_close(weights(sharded)[name], w, rtol=1e-3, atol=1e-5, msg=name)


def test_a_mixture_of_experts_trains_under_ddp_even_when_an_expert_gets_no_token(tmp_path):
    # 8 experts, 1 per token, 2 examples per process: some experts take no part in a step
    done = smalto("train", "--out", str(tmp_path / "moe"), "--steps", "3", "--experts", "8", "--active-experts", "1",
                  *FLAGS[:2], "--batch-size", "4", *FLAGS[4:], processes=2)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_rank_that_dies_takes_the_run_down(tmp_path):
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "smalto", "train", "--out", str(tmp_path / "x"), "--steps", "100000",
                            "--no-compile", *FLAGS],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline, victim = time.monotonic() + 120, None
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        time.sleep(1)
        for child in _children(run.pid):
            if "LOCAL_RANK=1" in _environ(child) and (tmp_path / "x").exists():
                victim = child
    assert victim is not None, "rank 1 never started training"
    os.kill(victim, signal.SIGKILL)
    try:
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode != 0
    assert "FAILED" in stderr or "failed" in stderr, stderr[-2000:]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _environ(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().replace(b"\0", b"\n").decode(errors="replace")
    except OSError:
        return ""


def test_muon_and_accumulated_micro_batches_train_like_one_process(tmp_path):
    # DDP holds back its gradient averaging until the last micro-batch of a step (no_sync); Muon
    # orthogonalises whole matrices, also when FSDP2 has split them across processes
    flags = [*FLAGS, "--steps", "3", "--log-every", "1", "--grad-accum", "2", "--optimizer", "muon"]
    runs = {"one": (1, []), "ddp": (2, []), "fsdp": (2, ["--shard"])}
    for name, (n, extra) in runs.items():
        done = smalto("train", "--out", str(tmp_path / name), *flags, *extra, processes=n)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("ddp", "fsdp"):
        torch.testing.assert_close(torch.tensor(losses(tmp_path / name)), torch.tensor(losses(tmp_path / "one")),
                                   rtol=1e-4, atol=1e-5)
        for key, w in weights(tmp_path / "one").items():
            torch.testing.assert_close(weights(tmp_path / name)[key], w, rtol=1e-3, atol=1e-5, msg=f"{name} {key}")
