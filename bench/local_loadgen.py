"""Constant-rate load on the local inference API, from its own process; records every answer.

    python bench/local_loadgen.py --url http://127.0.0.1:8000/predict --rate 250 --out answers.jsonl

Sends single-row POST /predict requests at --rate per second (open loop: a slow answer does not slow
the sender) until SIGTERM/SIGINT or --duration, then writes one JSON line per request:
{"status": 200 | 0 (connection failed), "request_id": ..., "model_version": ..., "t": seconds since start
when sent, "done": when answered, "done_at": time.monotonic() when answered}.
The deploy tests and the shift bench read it to check that no request failed and each 2xx was stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROWS = ["5.1, 3.5, 1.4, 0.2", "6.7, 3.0, 5.2, 2.3", "5.9, 3.0, 4.2, 1.5"]


async def _one(
    session: aiohttp.ClientSession, url: str, n: int, t0: float, out: list[dict[str, Any]]
) -> None:
    sent = time.monotonic() - t0
    rec: dict[str, Any] = {
        "n": n,
        "t": round(sent, 4),
        "status": 0,
        "request_id": None,
        "model_version": None,
    }
    try:
        async with session.post(url, json={"context": ROWS[n % len(ROWS)]}) as resp:
            body = await resp.read()
            # Only a whole answer counts: a body cut off (the server killed mid-answer) stays status 0.
            rec["status"] = resp.status
        try:
            answer = json.loads(body)
            rec["request_id"] = answer.get("request_id")
            rec["model_version"] = answer.get("model_version")
            if resp.status >= 400:
                rec["error"] = answer.get("error")
        except ValueError:
            rec["error"] = body[:200].decode(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
    done = time.monotonic()
    rec["done"] = round(done - t0, 4)
    rec["done_at"] = done  # CLOCK_MONOTONIC: comparable with another process's time.monotonic()
    out.append(rec)


async def run(url: str, rate: float, duration: float | None, ready_file: Path | None) -> list[dict[str, Any]]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    out: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        t0 = time.monotonic()
        if ready_file is not None:
            ready_file.write_text("ready\n")
        n = 0
        while not stop.is_set():
            now = time.monotonic() - t0
            if duration is not None and now >= duration:
                break
            due = int(now * rate) + 1
            while n < due:
                task = asyncio.create_task(_one(session, url, n, t0, out))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(min(0.005, 1.0 / rate))
        if tasks:
            await asyncio.wait(tasks)
    return sorted(out, key=lambda r: r["n"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=250.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM)")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per request")
    parser.add_argument("--ready-file", type=Path, default=None, help="written once sending starts")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    records = asyncio.run(run(args.url, args.rate, args.duration, args.ready_file))
    with args.out.open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    failed = sum(1 for r in records if not 200 <= r["status"] < 300)
    print(json.dumps({"requests": len(records), "failed": failed}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
