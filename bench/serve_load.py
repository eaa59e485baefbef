"""Load on `smalto serve` over loopback: latency and throughput at 1, 4 and 16 concurrent clients, the
same load with batching off (the peer: what the worker's batching buys), and an overload run that
sends 4x the queue bound at once (fast 503s; every accepted request completes).

    python bench/serve_load.py            # full run, a few minutes on 2 cores
    python bench/serve_load.py --quick    # seconds; what CI runs
    python bench/serve_load.py --url http://127.0.0.1:8000 --model NAME   # an already running server

Each server is started as a subprocess on a free port (the shipped model), so the clients (this
process) and the server share the 2 cores, as they would on a laptop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from smalto.data import ShapesWorld
from smalto.pipeline import DEFAULT_NAME
from smalto.plots import png_bytes

SAMPLES = [ShapesWorld(seed=99)[i] for i in range(16)]


def chat_body(i: int, model: str) -> dict:
    s = SAMPLES[i % len(SAMPLES)]
    url = "data:image/png;base64," + base64.b64encode(png_bytes(s.image)).decode()
    return {"model": model, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": s.qa[i % len(s.qa)]["q"]}]}]}


def image_body(i: int, model: str) -> dict:
    return {"model": model, "prompt": SAMPLES[i % len(SAMPLES)].captions[0], "n": 1}


ENDPOINTS = {"chat": ("/v1/chat/completions", chat_body), "image": ("/v1/images/generations", image_body)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(*flags: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "smalto", "serve", "--port", str(port), "--log-level", "warning",
                             *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start:\n{proc.stderr.read()}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(60)


async def load(url: str, model: str, kind: str, clients: int, requests: int, seconds: float) -> dict:
    """`clients` loops sending requests back to back until `requests` are done or `seconds` pass."""
    path, body = ENDPOINTS[kind]
    latencies, statuses, sent = [], [], 0
    stop_at = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient):
        nonlocal sent
        while sent < requests and time.monotonic() < stop_at:
            i, sent = sent, sent + 1
            t = time.monotonic()
            r = await http.post(f"{url}{path}", json=body(i, model))
            latencies.append(time.monotonic() - t)
            statuses.append(r.status_code)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients + 4)) as http:
        await client_warmup(http, url, path, body(0, model))
        start = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.monotonic() - start
    ok = [lat for lat, s in zip(latencies, statuses) if s == 200]
    return {"kind": kind, "clients": clients, "requests": len(latencies), "ok": len(ok),
            "p50_ms": 1000 * float(np.percentile(ok, 50)), "p95_ms": 1000 * float(np.percentile(ok, 95)),
            "rps": len(ok) / wall}


async def client_warmup(http, url, path, body):
    r = await http.post(f"{url}{path}", json=body)
    r.raise_for_status()


async def overload(url: str, model: str, bound: int) -> dict:
    """4x the queue bound at once: image requests that can't share a batch (each has its own seed)."""
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=4 * bound + 4)) as http:
        async def one(i):
            t = time.monotonic()
            r = await http.post(f"{url}/v1/images/generations",
                                json={"model": model, "prompt": SAMPLES[i].captions[0], "n": 4, "seed": i})
            return r.status_code, time.monotonic() - t, r

        results = await asyncio.gather(*(one(i % len(SAMPLES)) for i in range(4 * bound)))
    busy = [dt for s, dt, _ in results if s == 503]
    done = [dt for s, dt, r in results if s == 200 and len(r.json()["data"]) == 4]
    return {"sent": len(results), "accepted": sum(s != 503 for s, _, _ in results), "completed": len(done),
            "rejected": len(busy), "other": sum(s not in (200, 503) for s, _, _ in results),
            "reject_ms_max": 1000 * max(busy, default=0.0), "accepted_ms_p50": 1000 * float(np.median(done))}


def table(rows: list[dict]) -> str:
    out = ["| endpoint | batching | clients | requests | p50 ms | p95 ms | req/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['kind']} | {r['batching']} | {r['clients']} | {r['ok']}/{r['requests']} | "
                   f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['rps']:.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few requests per setting (seconds, for CI)")
    ap.add_argument("--url", help="an already running server (skips the batching-off peer and the overload run)")
    ap.add_argument("--model", default=DEFAULT_NAME)
    ap.add_argument("--queue-bound", type=int, default=4, help="--max-queue of the overload run")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    levels, peer = ((1, 4), 4) if args.quick else ((1, 4, 16), 16)
    per_level = {"chat": 4 if args.quick else 96, "image": 2 if args.quick else 48}
    seconds = 10 if args.quick else 60

    def run(url: str, batching: str, clients_levels) -> list[dict]:
        rows = []
        for kind in ("chat", "image"):
            for clients in clients_levels:
                n = max(per_level[kind], clients)
                row = asyncio.run(load(url, args.model, kind, clients, n, seconds))
                rows.append({**row, "batching": batching})
                print(f"  {kind:5} {batching:3} x{clients:<2} p50 {row['p50_ms']:6.0f} ms  p95 {row['p95_ms']:6.0f} ms"
                      f"  {row['rps']:5.1f} req/s", file=sys.stderr, flush=True)
        return rows

    report: dict = {"command": " ".join(["python", *sys.argv]), "cpu_threads": os.cpu_count()}
    if args.url:
        rows = run(args.url, "on", levels)
    else:
        with server("--max-queue", "64") as url:
            rows = run(url, "on", levels)
        with server("--max-queue", "64", "--max-batch", "1") as url:
            rows += run(url, "off", (peer,))
        with server("--max-queue", str(args.queue_bound)) as url:
            report["overload"] = asyncio.run(overload(url, args.model, args.queue_bound))
    report["load"] = rows
    print(table(rows))
    for kind in ("chat", "image"):
        on = next((r for r in rows if r["kind"] == kind and r["batching"] == "on" and r["clients"] == peer), None)
        off = next((r for r in rows if r["kind"] == kind and r["batching"] == "off"), None)
        if on and off:
            report[f"{kind}_batching_speedup"] = on["rps"] / off["rps"]
            print(f"{kind}: batching serves {on['rps'] / off['rps']:.1f}x the requests/s of one at a time "
                  f"at {peer} clients")
    if "overload" in report:
        o = report["overload"]
        print(f"overload: {o['sent']} requests at once against a queue of {args.queue_bound}: {o['rejected']} got 503 "
              f"(slowest in {o['reject_ms_max']:.0f} ms), {o['completed']}/{o['accepted']} accepted completed "
              f"(median {o['accepted_ms_p50']:.0f} ms), {o['other']} other statuses")
    if args.json:
        from smalto import atomic
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
