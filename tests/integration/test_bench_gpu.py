"""`python -m bench.gpu`, the GPU measurement, runs from a clean clone: here without CUDA it
says so, runs its CPU smoke pass through the same steps, and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# A Ray instance of its own (bench.gpu's), not the session's cluster: not `ray`.
pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def test_the_gpu_benchmark_runs(tmp_path):
    args = [sys.executable, "-m", "bench.gpu", "--results", str(tmp_path)]
    if torch.cuda.is_available():
        args.append("--cpu-smoke")  # the full GPU run is not a test
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "No CUDA device" in done.stdout
    report = json.loads((tmp_path / "gpu-cpu-smoke.json").read_text())
    assert report["cuda"] is False and report["engine"]["click"]["p50_ms"] > 0
    assert report["engine"]["bytes_per_cached_image"] > 0
    assert set(report["serving"]) == {"1_annotators", "2_annotators"}
