"""Throughput of the local inference API path (API -> endpoint -> storage), with every request stored.

    .venv/bin/python bench/local_api_bench.py [--duration 10] [--connections 32]

Trains the iris model with the real training entry point, registers and approves it on a temp
MLOPS_HOME, starts the platform daemon, then drives single-row POST requests with wrk (Debian package
`wrk`) from its own process:

  anchor   the serving variant's /invocations directly (the model server alone, nothing stored)
  api      POST /predict through the daemon: parse, route, predict, store in SQLite, answer

Both run in this one invocation, side by side. wrk collects the request_id of every 200 it received;
the bench then checks each is in the `requests` table (target: >= 1,000 req/s, every 2xx stored).
Prints a JSON summary; --out also writes it to a file; --write-readme replaces this benchmark's own
section of bench/README.md (between its markers) with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from readme_section import write_readme_section  # noqa: E402

from mlops.backend import APPROVED  # noqa: E402
from mlops.local import daemon  # noqa: E402
from mlops.local.client import DaemonClient  # noqa: E402
from mlops.local.registry import LocalRegistry  # noqa: E402
from mlops.local.settings import LocalSettings  # noqa: E402
from mlops.local.state import StateStore  # noqa: E402

ROW = "5.1, 3.5, 1.4, 0.2"
TARGET_REQ_PER_S = 1_000

# Each wrk thread keeps the request_id of every 200 it saw; done() writes them all to WRK_IDS_OUT.
WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ids = {} end
function response(status, headers, body)
  if status == 200 then
    local id = body:match('"request_id":"([^"]+)"')
    if id then ids[#ids + 1] = id end
  end
end
function done(summary, latency, requests)
  io.write(string.format("p50_us=%d p99_us=%d\n", latency:percentile(50), latency:percentile(99)))
  local out = os.getenv("WRK_IDS_OUT")
  if out == nil or out == "" then return end
  local f = io.open(out, "w")
  for _, t in ipairs(threads) do
    for _, id in ipairs(t:get("ids")) do f:write(id, "\n") end
  end
  f:close()
end
"""


def train(work: Path) -> Path:
    """The bundled iris data through the real training entry point (SageMaker directory contract)."""
    model_dir, output = work / "model", work / "output"
    env = {
        **os.environ,
        "SM_CHANNEL_TRAIN": str(REPO_ROOT / "data"),
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output / "data"),
        "SM_OUTPUT_DIR": str(output),
        "SM_HPS": "{}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    subprocess.run(
        [sys.executable, "-m", "workloads.train.train"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return model_dir


def wrk(url: str, body: str, *, duration: float, connections: int, ids_out: Path | None) -> dict[str, Any]:
    script = ids_out.parent / "post.lua" if ids_out else Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_SCRIPT)
    env = {**os.environ, "WRK_BODY": body, "WRK_IDS_OUT": str(ids_out or "")}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(script), url]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = re.search(r"p50_us=(\d+) p99_us=(\d+)", out)
    return {
        "requests": total,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "none",
        "p50_ms": int(lat.group(1)) / 1000 if lat else None,
        "p99_ms": int(lat.group(2)) / 1000 if lat else None,
    }


def report(summary: dict[str, Any]) -> str:
    """The bench/README.md section for one run's summary."""
    anchor, api = summary["anchor_model_server_invocations"], summary["local_api_predict"]

    def row(path: str, r: dict[str, Any], req_s: str) -> str:
        return f"| {path} | {req_s} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['non_2xx']:,} |"

    seen, stored = summary["api_2xx_seen_by_wrk"], summary["api_2xx_seen_and_stored"]
    verdict = "**every 2xx stored**" if summary["every_2xx_stored"] else "**NOT every 2xx stored**"
    met = "met" if api["req_per_s"] >= TARGET_REQ_PER_S else "MISSED"
    return "\n".join(
        [
            "## Local platform: inference API throughput (`bench/local_api_bench.py`)",
            "",
            f"One run, side by side, {summary['cpus']} CPUs shared by wrk (1 thread, "
            f"{summary['connections']} connections, {summary['duration_s']:g} s), the daemon and one serving",
            "variant; model trained by `workloads.train.train` on `data/iris.csv`; single-row requests.",
            "wrk keeps the `request_id` of every 200 it received; the bench checks each one is in the "
            "`requests` table.",
            "",
            "| path | req/s | p50 ms | p99 ms | non-2xx |",
            "| --- | ---: | ---: | ---: | ---: |",
            row(
                "anchor: the variant's `/invocations` directly (model server alone, nothing stored)",
                anchor,
                f"{anchor['req_per_s']:,.0f}",
            ),
            row(
                "`POST /predict` through the daemon (parse, route, predict, store in SQLite, answer)",
                api,
                f"**{api['req_per_s']:,.0f}**",
            ),
            "",
            f"- {seen:,} answers of 200 seen by wrk, {stored:,} of them stored: {verdict}.",
            f"- target >= {TARGET_REQ_PER_S:,} req/s through the API: **{met}**.",
            f"- The API path is {summary['api_vs_anchor']:.2f}x the bare model server: the daemon is one "
            "Python process doing HTTP in, HTTP out",
            "  (aiohttp pool) and the SQLite group commit on the same cores the model server and wrk "
            "compete for.",
            "",
            f"Command: `.venv/bin/python bench/local_api_bench.py --duration {summary['duration_s']:g} "
            "--write-readme` (needs `wrk`: `apt-get install wrk`).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write-readme", action="store_true", help="update this section of bench/README.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        work = Path(tmp)
        settings = LocalSettings(home=work / "home", api_port=0)
        registry = LocalRegistry(settings.db_path, settings.models_dir)
        version = registry.register(settings.group, train(work), metrics={}).version
        registry.set_status(settings.group, version, APPROVED, approver="bench")
        registry.close()
        info = daemon.start(settings)
        try:
            client = DaemonClient(info)
            deadline = time.monotonic() + 60
            while client.status().serving_version != version:
                if time.monotonic() > deadline:
                    raise SystemExit("the model was not deployed within 60 s")
                time.sleep(0.1)
            state = StateStore(settings.db_path, settings.endpoint_name)
            port = state.variants()[0].port
            state.close()

            # Warm both paths (connection pools, first-call costs) before measuring.
            wrk(
                info.predict_url,
                json.dumps({"context": ROW}),
                duration=2,
                connections=args.connections,
                ids_out=None,
            )
            anchor = wrk(
                f"http://127.0.0.1:{port}/invocations",
                json.dumps({"instances": [[float(x) for x in ROW.split(",")]]}),
                duration=args.duration,
                connections=args.connections,
                ids_out=None,
            )
            ids_file = work / "ids.txt"
            api = wrk(
                info.predict_url,
                json.dumps({"context": ROW}),
                duration=args.duration,
                connections=args.connections,
                ids_out=ids_file,
            )
        finally:
            daemon.stop(settings)
        seen = set(ids_file.read_text().split())
        conn = sqlite3.connect(settings.db_path)
        stored = {r[0] for r in conn.execute("SELECT request_id FROM requests WHERE status_code = 200")}
        conn.close()
        summary = {
            "cpus": os.cpu_count(),
            "connections": args.connections,
            "duration_s": args.duration,
            "anchor_model_server_invocations": anchor,
            "local_api_predict": api,
            "api_2xx_seen_by_wrk": len(seen),
            "api_2xx_seen_and_stored": len(seen & stored),
            "every_2xx_stored": seen <= stored,
            "api_vs_anchor": round(api["req_per_s"] / anchor["req_per_s"], 3),
        }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.write_readme:
        write_readme_section("local_api_bench", report(summary))
    ok = summary["every_2xx_stored"] and api["non_2xx"] == 0 and api["req_per_s"] >= TARGET_REQ_PER_S
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
