"""A checkpoint survives a kill at any instant of a save over it: the old one or the new one loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from smalto import atomic
from smalto.errors import SmaltoError

# Runs in a fresh interpreter with one torch thread, so that forking it is safe. For k = 0, 1, ...
# a forked child saves the "new" checkpoint over the "old" one and SIGKILLs itself just before its
# k-th filesystem call (rename, mkdir, fsync, chmod, unlink, copy, swap ...); the parent then loads
# the checkpoint and records which one it got. The loop ends with the first save that completes.
KILL_AT_EACH_STEP = r"""
import json, os, shutil, signal, sys
from pathlib import Path

import torch
torch.set_num_threads(1)

from smalto import atomic
from smalto.checkpoint import load_checkpoint, save_checkpoint
from smalto.model import Transformer, preset
from smalto.format import Vocab
from smalto.tokenizers import load_tokenizers

out, exchange = Path(sys.argv[1]), sys.argv[2] == "swap"
if not exchange:
    atomic._RENAMEAT2 = None  # the portable path: park the old directory, move the new one in
tok = load_tokenizers()
vocab = Vocab.from_tokenizers(tok)
models = {}
for step in (1, 2):
    torch.manual_seed(step)
    models[step] = Transformer(preset("shapes-micro", vocab.size))
path = out / "run"
save_checkpoint(path, models[1], vocab, tok, extra={"step": 1})
CALLS = [(os, "replace"), (os, "rename"), (os, "mkdir"), (os, "fsync"), (os, "chmod"), (os, "unlink"),
         (os, "rmdir"), (shutil, "rmtree"), (shutil, "copytree"), (shutil, "copy2"), (atomic, "_exchange")]
results = []
for k in range(1000):
    pid = os.fork()
    if pid == 0:
        # Sweep what the last killed child left first: counted, its calls would shift this save's by
        # as many as that child left files, and the k-th call would skip some steps of the save.
        atomic._sweep(path)
        count = [0]
        def hooked(fn):
            def call(*args, **kwargs):
                if count[0] == k:
                    os.kill(os.getpid(), signal.SIGKILL)
                count[0] += 1
                return fn(*args, **kwargs)
            return call
        for module, name in CALLS:
            setattr(module, name, hooked(getattr(module, name)))
        save_checkpoint(path, models[2], vocab, tok, extra={"step": 2})
        os._exit(0)
    status = os.waitpid(pid, 0)[1]
    killed = os.WIFSIGNALED(status)
    present = path.is_dir()
    model, _, _, meta = load_checkpoint(path)  # recovers a parked checkpoint if it must
    expected = models[meta["step"]].state_dict()
    same = all(torch.equal(model.state_dict()[name], value) for name, value in expected.items())
    results.append({"killed": killed, "present": present, "step": meta["step"], "same": same})
    if not killed:
        break
    if meta["step"] == 2:  # the new one landed: put the old one back for the next kill
        save_checkpoint(path, models[1], vocab, tok, extra={"step": 1})
print(json.dumps({"results": results, "left": sorted(p.name for p in out.iterdir())}))
"""


@pytest.mark.parametrize("mode", ["swap", "park"])
def test_a_kill_at_any_step_of_a_save_leaves_a_loadable_checkpoint(tmp_path, mode):
    if mode == "swap" and atomic._RENAMEAT2 is None:
        pytest.skip("this system cannot swap two directories atomically")
    r = subprocess.run([sys.executable, "-c", KILL_AT_EACH_STEP, str(tmp_path), mode], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    results = report["results"]
    kills = [x for x in results if x["killed"]]
    assert len(kills) >= 15 and not results[-1]["killed"] and results[-1]["step"] == 2
    assert all(x["same"] for x in results)  # every load gave exactly the old or the new weights
    assert {x["step"] for x in kills} == {1, 2}  # kills came both before and after the switch
    if mode == "swap":
        assert all(x["present"] for x in results)  # never an instant without a checkpoint
    else:
        assert any(not x["present"] for x in kills)  # a kill between the renames: recovered on load
    assert report["left"] == ["run"]  # what killed writers left behind was cleaned up by later saves


def test_recover_puts_a_parked_directory_back_and_nothing_else(tmp_path):
    path, parked = tmp_path / "run", tmp_path / ".run.old"
    parked.mkdir()
    (parked / "meta.json").write_text("{}")
    atomic.recover(path)
    assert (path / "meta.json").is_file() and not parked.exists()
    parked.mkdir()  # with the path present, a parked copy is stale: recover leaves both alone
    atomic.recover(path)
    assert path.is_dir() and parked.is_dir()


def test_a_failed_write_leaves_the_old_directory_and_no_temporary(tmp_path):
    path = tmp_path / "out"
    with atomic.directory(path) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic.directory(path, overwrite=True) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("disk full")
    assert (path / "a").read_text() == "old" and os.listdir(tmp_path) == ["out"]
    with pytest.raises(SmaltoError, match="already exists"), atomic.directory(path):
        pass
