from __future__ import annotations

import psutil
import torch

from sam3_core import memory


class TestDefaultBudget:
    def test_a_container_limit_bounds_the_cpu_budget(self, tmp_path, monkeypatch):
        monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
        (tmp_path / "memory.max").write_text("4294967296\n")  # 4 GiB pod limit
        (tmp_path / "memory.current").write_text(str(1024**3))  # 1 GiB used
        assert memory.available_memory() == 3 * 1024**3
        assert memory.default_cache_budget(torch.device("cpu")) == 3 * 1024**3 // 4

    def test_no_limit_means_free_ram(self, tmp_path, monkeypatch):
        monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
        (tmp_path / "memory.max").write_text("max\n")
        (tmp_path / "memory.current").write_text("123")
        free = memory.available_memory()
        assert abs(free - psutil.virtual_memory().available) < 256 * 2**20

    def test_cgroup_v1(self, tmp_path, monkeypatch):
        monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
        (tmp_path / "memory").mkdir()
        (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(2 * 1024**3))
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text(str(1024**3))
        assert memory.available_memory() == 1024**3


def test_release_freed_memory_runs_where_there_is_no_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    memory.release_freed_memory()  # a no-op, not an error
