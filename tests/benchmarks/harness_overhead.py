"""Harness overhead of the provider layer against an instant local OpenAI-compatible server.

    .venv/bin/python tests/benchmarks/harness_overhead.py [--attempts 256] [--calls 3] [--workers 1,16,128]

Each attempt is one ThunderAgent program (open, `calls` completions, release). Per call we split the time
into the HTTP request as the openai SDK sees it (`latency_s` in calls.jsonl) and the rest: our request
building, retry loop, usage parsing and the calls.jsonl append ("harness"). The server answers at once,
so everything measured is client-side cost. Not collected by pytest (tests/benchmarks is excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))

from fake_openai_server import FakeOpenAIServer, ok  # noqa: E402

from swelab.generate.providers import open_program  # noqa: E402
from swelab.params import ModelConfig  # noqa: E402


def run(workers: int, attempts: int, calls: int, base_url: str, out: Path) -> dict:
    model = ModelConfig(name="bench/model", kind="patch", provider="thunderagent", model_id="bench",
                        base_url=base_url, options={"max_retries": 0})
    walls: list[float] = []

    def attempt(i: int) -> None:
        cell = out / f"w{workers}" / str(i)
        with open_program(model, cell, f"inst-{i}", 1) as client:
            for _ in range(calls):
                t0 = time.perf_counter()
                client.complete([{"role": "user", "content": "diff please"}])
                walls.append(time.perf_counter() - t0)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(attempt, range(attempts)))
    wall = time.perf_counter() - start
    http = [json.loads(line)["latency_s"] for p in (out / f"w{workers}").rglob("calls.jsonl")
            for line in p.read_text().splitlines()]
    n = len(walls)
    harness = max(0.0, (sum(walls) - sum(http)) / n)
    return {
        "workers": workers, "calls": n, "wall_s": wall, "calls_per_s": n / wall,
        "call_p50_ms": 1000 * statistics.median(walls), "http_p50_ms": 1000 * statistics.median(http),
        "harness_ms_per_call": 1000 * harness,
        # busy time of all workers spent in our code, over the workers' total time
        "harness_share": harness * n / (wall * min(workers, attempts)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=256)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--workers", default="1,16,128")
    args = parser.parse_args(argv)
    rows = []
    with FakeOpenAIServer(default=ok("--- a/x\n+++ b/x\n")) as server, tempfile.TemporaryDirectory() as tmp:
        for workers in (int(w) for w in args.workers.split(",")):
            rows.append(run(workers, args.attempts, args.calls, server.base_url, Path(tmp)))
        releases = len(server.releases)
    print(f"{'workers':>7} {'calls':>6} {'wall s':>7} {'calls/s':>8} {'call p50 ms':>11} {'http p50 ms':>11} "
          f"{'harness ms/call':>15} {'harness share':>13}")
    for r in rows:
        print(f"{r['workers']:>7} {r['calls']:>6} {r['wall_s']:>7.2f} {r['calls_per_s']:>8.1f} "
              f"{r['call_p50_ms']:>11.2f} {r['http_p50_ms']:>11.2f} {r['harness_ms_per_call']:>15.3f} "
              f"{100 * r['harness_share']:>12.1f}%")
    expected = args.attempts * len(rows)
    print(f"programs released: {releases} of {expected}")
    return 0 if releases == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
