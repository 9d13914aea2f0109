"""Runs every bench/bench_*.py in turn, each in its own process: python bench/run_all.py [--quick].

--quick is passed on to each script. Exits non-zero when any script fails (the others still run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every bench/bench_*.py script.")
    parser.add_argument("--quick", action="store_true", help="pass --quick to each script (a smoke run)")
    args = parser.parse_args()
    failed: list[str] = []
    scripts = sorted(BENCH.glob("bench_*.py"))
    for script in scripts:
        command = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"\n== {script.name}{' --quick' if args.quick else ''}", flush=True)
        started = time.monotonic()
        code = subprocess.run(command, check=False).returncode
        took = time.monotonic() - started
        if code != 0:
            failed.append(script.name)
            print(f"!! {script.name} failed (exit status {code}) after {took:.1f} s", flush=True)
        else:
            print(f"(done in {took:.1f} s)", flush=True)
    if failed:
        print(f"\n{len(failed)} of {len(scripts)} benchmark scripts failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
