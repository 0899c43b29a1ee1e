"""Benchmarks that measure in a fresh process: its own memory, threads and allocator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_child(module: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """`python -m module args...` in a new process (`env` added to ours); its figures are the
    JSON on the last line it prints."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
