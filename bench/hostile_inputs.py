"""Hostile inputs, measured: each case of the "harden every input" issue, and the ones found since,
sent to the CLI, to `smalto data check` and to a running `smalto serve`.

    python bench/hostile_inputs.py --json docs/hostile-inputs.json     # ~1 min on 2 cores

For each: what came back (the CLI's exit status and whether its stderr is one line without a
traceback; the HTTP status and error code), the seconds it took and the peak resident memory.
Beside them, the same command on a valid 32×32 input: a CLI command loads torch and the model
before it reads its input, so its seconds and memory are mostly that; for the server, the
memory is how much its peak grew while it answered (Linux resets the peak on writing 5 to
/proc/PID/clear_refs). Targets: a one-line error (rc 2) or a 4xx, under 500 MB and 2 s.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the hostile files the tests use

from conftest import wait_until_up  # noqa: E402
from hostile import bomb_png, corrupt_gif, frame_bomb_gif, gif, huge_gif, huge_webp, wide_screen_gif  # noqa: E402

from smalto import atomic  # noqa: E402
from smalto.data.video import clip_bytes  # noqa: E402
from smalto.assets import DEFAULT_MODEL  # noqa: E402

SMALTO = [sys.executable, "-m", "smalto"]
# The CLI, writing its own peak memory (VmHWM, which an exec starts afresh; a child's rusage
# would start from this process's) to the file named by $HWM when it exits.
MEASURED = [sys.executable, "-c", "import atexit, os, sys\n"
            "def hwm():\n"
            "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "    open(os.environ['HWM'], 'w').write(line.split()[1])\n"
            "atexit.register(hwm)\n"
            "from smalto.apps.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n"]
MODEL = "hostile"  # the name the bench's server answers to
# Cases that are to be read, not refused: the valid peers, and a clip whose frame-time tag is absurd
# (ignored; it used to overflow).
READ = {"ok.png", "ok.gif", "fps-1e308.gif", "valid line", "valid picture", "valid clip"}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def files(frames: int) -> dict[str, bytes]:
    """The pictures and clips, by name; `frames`: how many the model's clips hold."""
    valid_clip = clip_bytes(np.stack([np.full((32, 32, 3), 20 * k, np.uint8) for k in range(frames)]))
    absurd = gif(frames, b"smalto fps=1e308 frames=%d" % frames, duration=65000)
    return {"ok.png": _png(np.full((32, 32, 3), 255, np.uint8)), "ok.gif": valid_clip,
            "png-20000.png": bomb_png(20000, 20000), "gif-20000.gif": huge_gif(20000, 20000),
            "webp-16383.webp": huge_webp(), "corrupt.gif": corrupt_gif(), "fps-1e308.gif": bytes(absurd),
            "frame-12000.gif": frame_bomb_gif(), "screen-4096x64.gif": wide_screen_gif()}


FOLDER_LINES = {  # a data.jsonl line each, beside one valid picture
    "nested 100,000 deep": '{"image": "ok.png", "text": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "5,000-digit integer": '{"image": "ok.png", "text": "hi", "n": ' + "9" * 5000 + "}",
    "Infinity in a scene": '{"image": "ok.png", "scene": {"objects": [{"shape": "circle", "color": "red", '
                           '"size": "small", "row": Infinity, "col": 0}]}}',
    "NUL in a path": '{"image": "ok\\u0000.png", "text": "hi"}',
}


def run_cli(args: list[str], cwd: Path) -> dict:
    """One CLI command: its exit status, stderr's lines, seconds and peak memory."""
    hwm = cwd / "hwm"
    start = time.perf_counter()
    r = subprocess.run(MEASURED + args, cwd=cwd, capture_output=True, env={**os.environ, "HWM": str(hwm)})
    seconds = time.perf_counter() - start
    err_lines = r.stderr.decode(errors="replace").strip().splitlines()
    return {"rc": r.returncode, "one_line": len(err_lines) <= 1 and b"Traceback" not in r.stderr,
            "message": err_lines[-1][:200] if err_lines else r.stdout.decode(errors="replace").strip()[:200],
            "seconds": round(seconds, 2), "peak_mb": round(int(hwm.read_text()) / 1024)}


class Server:
    """`smalto serve` in a child process, its peak memory read from /proc."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self.child = subprocess.Popen(SMALTO + ["serve", "--port", str(port), "--log-level", "warning",
                                                "--model-name", MODEL],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_up(self.url, 120)

    def _kb(self, field: str) -> int:
        status = Path(f"/proc/{self.child.pid}/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith(field)).split()[1])

    def post(self, body: bytes) -> dict:
        Path(f"/proc/{self.child.pid}/clear_refs").write_text("5")
        before, start = self._kb("VmRSS"), time.perf_counter()
        r = httpx.post(f"{self.url}/v1/chat/completions", content=body, timeout=120,
                       headers={"Content-Type": "application/json"})
        error = r.json().get("error") or {} if r.headers.get("content-type", "").startswith("application/json") else {}
        return {"status": r.status_code, "code": error.get("code"), "message": (error.get("message") or "")[:200],
                "seconds": round(time.perf_counter() - start, 2), "grew_mb": round((self._kb("VmHWM") - before) / 1024)}

    def close(self) -> None:
        self.child.terminate()
        self.child.wait(30)


def chat(part: dict | None = None, text: str = "what is there?") -> bytes:
    content = ([part] if part else []) + [{"type": "text", "text": text}]
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
    return json.dumps(body).encode()


def data_url(name: str, data: bytes, video: bool) -> dict:
    mime = {"png": "image/png", "gif": "image/gif", "webp": "image/webp"}[name.rsplit(".", 1)[1]]
    kind = "video_url" if video else "image_url"
    return {"type": kind, kind: {"url": f"data:{mime};base64," + base64.b64encode(data).decode()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--port", type=int, default=0, help="the server's port (default: a free one)")
    args = p.parse_args()
    # (read without loading the model: a child's peak memory starts at its parent's, so this
    # process stays small; the shipped model's clips hold its video tokenizer's frames)
    frames = json.loads((DEFAULT_MODEL / "tokenizers" / "video.json").read_text())["frames"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        made = files(frames)
        for name, data in made.items():
            (work / name).write_bytes(data)
        for name in made:
            command = "ask" if name.endswith(".gif") else "caption"
            extra = ["what moves?"] if command == "ask" else []
            rows.append({"surface": "cli", "case": name, "command": f"smalto {command} {name}",
                         **run_cli([command, name, *extra], work)})
        rows.append({"surface": "cli", "case": "question not UTF-8", "command": "smalto ask ok.png b'what \\xff?'",
                     **run_cli(["ask", "ok.png", os.fsdecode(b"what \xff?")], work)})
        for name in ("ok.gif", "fps-1e308.gif", "frame-12000.gif", "screen-4096x64.gif", "corrupt.gif"):
            folder = work / f"clips-{name}"
            (folder / "clips").mkdir(parents=True)
            (folder / "clips" / name).write_bytes(made[name])
            (folder / "data.jsonl").write_text(json.dumps({"clip": f"clips/{name}", "text": "a clip"}) + "\n")
            rows.append({"surface": "data check", "case": name, "command": f"smalto data check {folder.name}",
                         **run_cli(["data", "check", folder.name], work)})
        for case, line in {"valid line": '{"image": "ok.png", "text": "hi"}', **FOLDER_LINES}.items():
            folder = work / f"folder-{len(rows)}"
            (folder / "images").mkdir(parents=True)
            (folder / "images" / "ok.png").write_bytes(made["ok.png"])
            (folder / "data.jsonl").write_text(line.replace('"ok', '"images/ok') + "\n")
            rows.append({"surface": "data check", "case": case, "command": "smalto data check DIR",
                         **run_cli(["data", "check", folder.name], work)})
        if not args.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                args.port = s.getsockname()[1]
        server = Server(args.port)
        try:
            bodies = {"valid picture": chat(data_url("ok.png", made["ok.png"], False)),
                      "valid clip": chat(data_url("ok.gif", made["ok.gif"], True))}
            for name, data in made.items():
                if not name.startswith("ok"):
                    bodies[name] = chat(data_url(name, data, name.endswith(".gif")))
            bodies["lone surrogate \\ud800"] = chat(text="what \\ud800?").replace(b"\\\\ud800", b"\\ud800")
            for case, body in bodies.items():
                rows.append({"surface": "http", "case": case, "command": "POST /v1/chat/completions",
                             **server.post(body)})
        finally:
            server.close()
    for row in rows:
        memory = row.get("peak_mb", row.get("grew_mb"))
        if row["case"] in READ:  # read and answered, as the valid peer is: no time target (the model runs)
            row["meets"] = row.get("rc", row.get("status")) in (0, 200) and memory < 500
        else:
            refused = row.get("rc") == 2 and row["one_line"] or 400 <= row.get("status", 0) < 500
            row["meets"] = bool(refused and row["seconds"] < 2 and memory < 500)
        answer = f"rc {row['rc']}" if "rc" in row else f"{row['status']} {row['code'] or ''}"
        memory = f"{row['peak_mb']} MB peak" if "peak_mb" in row else f"+{row['grew_mb']} MB"
        print(f"{row['surface']:10} {row['case']:24} {answer:22} {row['seconds']:5.2f} s {memory:12} "
              f"{'ok  ' if row['meets'] else 'MISS'} {row['message'][:90]}")
    if args.json:
        atomic.write_text(args.json, json.dumps({"command": "python bench/hostile_inputs.py --json " + str(args.json),
                                                 "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
