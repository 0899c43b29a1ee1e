from __future__ import annotations

import psutil
import torch

from sam3_core import memory

GiB = 1024**3


class TestPlan:
    """Every part of a replica's memory counts, and replicas sharing a node add up."""

    def test_four_replicas_sharing_a_node_fit_it(self, monkeypatch):
        """What the shipped config's autoscaling maximum (4 CPU replicas) does on one node:
        each holds its model (2 GiB), and all plan from the node's memory as Ray counts it."""
        node = 20 * GiB
        monkeypatch.setattr(memory.psutil, "Process", lambda: _Rss(2 * GiB))
        plans = [
            memory.plan_memory(
                torch.device("cpu"),
                share=1 / 4,
                activation_reserve=GiB,
                logits_cache=512 * 2**20,
                text_cache=64 * 2**20,
                pool=node,
            )
            for _ in range(4)
        ]
        assert sum(p.total for p in plans) <= node
        for plan in plans:
            assert plan.held == 2 * GiB and plan.logits_cache and plan.text_cache
            assert plan.embedding_cache == node // 4 - (2 + 1 + 0.5 + 1 / 16) * GiB

    def test_video_sessions_are_counted_beside_the_image_caches(self, monkeypatch):
        node = 20 * GiB
        monkeypatch.setattr(memory.psutil, "Process", lambda: _Rss(2 * GiB))
        parts = {"activation_reserve": GiB, "logits_cache": 512 * 2**20, "text_cache": 64 * 2**20}
        rest = node // 4 - (2 + 1 + 0.5 + 1 / 16) * GiB
        shared = memory.plan_memory(
            torch.device("cpu"), share=1 / 4, pool=node, video_sessions=None, **parts
        )
        assert shared.video_sessions == int(rest * memory.VIDEO_SESSIONS_SHARE)
        assert shared.embedding_cache == rest - shared.video_sessions
        assert shared.total == node // 4
        fixed = memory.plan_memory(
            torch.device("cpu"), share=1 / 4, pool=node, video_sessions=GiB, **parts
        )
        assert fixed.video_sessions == GiB and fixed.embedding_cache == rest - GiB

    def test_a_share_too_small_is_said_and_the_cache_keeps_a_floor(self, monkeypatch, caplog):
        monkeypatch.setattr(memory, "available_memory", lambda: 2 * GiB)
        plan = memory.plan_memory(
            torch.device("cpu"), share=0.1, activation_reserve=GiB, logits_cache=0, text_cache=0
        )
        assert plan.embedding_cache == memory.MIN_EMBEDDING_CACHE_BYTES
        assert "does not cover" in caplog.text

    def test_the_engine_counts_its_caches(self, make_segmenter):
        settings = {"memory_share": 0.5, "activation_reserve_bytes": 2**28}
        with_concepts = make_segmenter(embedding_cache_bytes=None, **settings)
        plan = with_concepts.memory
        assert plan.share == 0.5 and plan.activation_reserve == 2**28
        assert plan.logits_cache == with_concepts.settings.logits_cache_bytes
        assert plan.text_cache == with_concepts.settings.text_cache_bytes
        assert with_concepts.embeddings.max_bytes == plan.embedding_cache
        interactive = make_segmenter(embedding_cache_bytes=None, concepts=False, **settings)
        assert interactive.memory.text_cache == 0
        fixed = make_segmenter(embedding_cache_bytes=2**26)
        assert fixed.memory is None and fixed.embeddings.max_bytes == 2**26
        assert fixed.video_settings().video_budget == 4096 * 2**20  # no plan: the default

    def test_the_engine_plans_its_video_sessions(self, make_segmenter):
        settings = {"embedding_cache_bytes": None, "memory_share": 0.5}
        planned = make_segmenter(**settings)
        assert planned.memory.video_sessions > 0
        assert planned.video_settings().video_session_bytes == planned.memory.video_sessions
        chosen = make_segmenter(video_session_bytes=2**28, **settings)
        assert chosen.memory.video_sessions == 2**28
        assert chosen.video_settings().video_budget == 2**28


class _Rss:
    def __init__(self, rss: int) -> None:
        self.rss = rss

    def memory_info(self) -> _Rss:
        return self


class TestDefaultBudget:
    def test_a_container_limit_bounds_the_cpu_budget(self, tmp_path, monkeypatch):
        monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
        (tmp_path / "memory.max").write_text("4294967296\n")  # 4 GiB pod limit
        (tmp_path / "memory.current").write_text(str(1024**3))  # 1 GiB used
        assert memory.available_memory() == 3 * 1024**3
        plan = memory.plan_memory(
            torch.device("cpu"), share=1.0, activation_reserve=0, logits_cache=0, text_cache=0
        )
        assert plan.pool == 3 * 1024**3 + plan.held
        assert plan.embedding_cache == 3 * 1024**3 and plan.total == plan.pool

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
