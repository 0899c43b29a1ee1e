"""Prometheus metrics of a segmenter replica, exported through Ray's metrics agent.

Ray tags each with `deployment`, `replica` and `application` and prefixes the name with
`ray_`; requests by route and status come from Ray Serve's own `ray_serve_*` HTTP metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil
from ray.serve import metrics

if TYPE_CHECKING:  # the ingress imports this module and must not import the engine (torch)
    from sam3_core.engine import EngineStats
    from sam3_core.memory import MemoryPlan
    from sam3_core.video_sessions import VideoStats

LATENCY_BUCKETS_S = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60]
STAGE_BUCKETS_S = [0.0002, 0.0005, 0.001, *LATENCY_BUCKETS_S]


class StageMetrics:
    """`sam3_request_stage_seconds{operation, stage}`: the stages of each request
    (`deployments.operations.STAGES`), observed where they happen (ingress or replica)."""

    def __init__(self) -> None:
        self.stages = metrics.Histogram(
            "sam3_request_stage_seconds",
            description="Time of each stage of a request (parse, owner, queue, embed, decode, "
            "encode, replica, total), as in its Server-Timing header.",
            boundaries=STAGE_BUCKETS_S,
            tag_keys=("operation", "stage"),
        )

    def observe(self, operation: str, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stages.observe(seconds, tags={"operation": operation, "stage": stage})


class SegmenterMetrics:
    """Cache counters follow the engine's cumulative stats; latencies are observed per call."""

    def __init__(self) -> None:
        self.embedding_hits = metrics.Counter(
            "sam3_embedding_cache_hits", description="Requests served from a cached embedding."
        )
        self.embedding_misses = metrics.Counter(
            "sam3_embedding_cache_misses",
            description="Requests whose image was not cached (embedded, or 404 when sent by id).",
        )
        self.embedding_handoffs = metrics.Counter(
            "sam3_embedding_cache_handoffs",
            description="Requests served first from an embedding another replica handed over "
            "(a moved image's new owner, or a helper of a hot image's owner).",
        )
        self.handoff_images = metrics.Counter(
            "sam3_handoff_images",
            description="Images moved between replicas: sent to a new owner, received from "
            "a previous one, or borrowed from the owner by a helper.",
            tag_keys=("direction",),
        )
        self.handoff_latency = metrics.Histogram(
            "sam3_handoff_latency_seconds",
            description="Time to move one image between replicas, from export to adoption.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("direction",),
        )
        self.embedding_evictions = metrics.Counter(
            "sam3_embedding_cache_evictions", description="Embeddings evicted by the LRU."
        )
        self.embedding_bytes = metrics.Gauge(
            "sam3_embedding_cache_bytes", description="Bytes held by the embedding cache."
        )
        self.embedding_budget = metrics.Gauge(
            "sam3_embedding_cache_budget_bytes", description="Byte budget of the embedding cache."
        )
        self.embedding_entries = metrics.Gauge(
            "sam3_embedding_cache_entries", description="Images in the embedding cache."
        )
        self.logits_hits = metrics.Counter(
            "sam3_logits_cache_hits", description="Loads that found an earlier prompt's logits."
        )
        self.logits_misses = metrics.Counter(
            "sam3_logits_cache_misses", description="Loads that found no earlier prompt's logits."
        )
        self.logits_entries = metrics.Gauge(
            "sam3_logits_cache_entries", description="Prompt sets in the logits cache."
        )
        self.logits_bytes = metrics.Gauge(
            "sam3_logits_cache_bytes", description="Bytes held by the logits cache."
        )
        self.text_hits = metrics.Counter(
            "sam3_text_cache_hits", description="Concept texts found in the text cache."
        )
        self.text_misses = metrics.Counter(
            "sam3_text_cache_misses", description="Concept texts the text encoder had to encode."
        )
        self.text_bytes = metrics.Gauge(
            "sam3_text_cache_bytes", description="Bytes held by the text-embedding cache."
        )
        self.concept_latency = metrics.Histogram(
            "sam3_concept_latency_seconds",
            description="Time of one concept query in the model (detector neck and detector, "
            "all prompts of the request).",
            boundaries=LATENCY_BUCKETS_S,
        )
        self.embed_latency = metrics.Histogram(
            "sam3_embed_latency_seconds",
            description="Time to embed one image (decode + model).",
            boundaries=LATENCY_BUCKETS_S,
        )
        self.decode_latency = metrics.Histogram(
            "sam3_decode_latency_seconds",
            description="Time to decode one request's prompts and encode its masks.",
            boundaries=LATENCY_BUCKETS_S,
        )
        self.rss = metrics.Gauge(
            "sam3_replica_rss_bytes", description="Resident memory of the replica's process."
        )
        self.private_memory = metrics.Gauge(
            "sam3_replica_private_memory_bytes",
            description="Resident memory the replica alone holds: RSS less shared pages "
            "(Ray's object store, which requests' image bytes pass through, and libraries).",
        )
        self.memory_share = metrics.Gauge(
            "sam3_memory_share",
            description="Share of the node's (or GPU's) memory this replica plans with.",
        )
        self.memory_pool = metrics.Gauge(
            "sam3_memory_pool_bytes",
            description="The memory the replicas of this replica's node (or GPU) share.",
        )
        self.memory_planned = metrics.Gauge(
            "sam3_memory_planned_bytes",
            description="What this replica may hold in all: held at start (model), activation "
            "reserve, and every cache's budget.",
        )
        self.stages = StageMetrics()
        self._process = psutil.Process()
        self._last: EngineStats | None = None

    def record_memory(self, plan: MemoryPlan) -> None:
        self.memory_share.set(plan.share)
        self.memory_pool.set(plan.pool)
        self.memory_planned.set(plan.total)

    def record_stats(self, stats: EngineStats) -> None:
        """Advance the counters to the engine's cumulative values; set the gauges."""
        last = self._last
        for counter, field in (
            (self.embedding_hits, "embedding_cache_hits"),
            (self.embedding_misses, "embedding_cache_misses"),
            (self.embedding_handoffs, "embedding_cache_handoffs"),
            (self.embedding_evictions, "embedding_cache_evictions"),
            (self.logits_hits, "logits_cache_hits"),
            (self.logits_misses, "logits_cache_misses"),
            (self.text_hits, "text_cache_hits"),
            (self.text_misses, "text_cache_misses"),
        ):
            delta = getattr(stats, field) - (getattr(last, field) if last else 0)
            if delta > 0:
                counter.inc(delta)
        self.embedding_bytes.set(stats.embedding_cache_bytes)
        self.embedding_budget.set(stats.embedding_cache_budget_bytes)
        self.embedding_entries.set(stats.embedding_cache_entries)
        self.logits_entries.set(stats.logits_cache_entries)
        self.logits_bytes.set(stats.logits_cache_bytes)
        # Read with the caches' sizes (~10 us, /proc/self/statm), so that the two agree.
        memory = self._process.memory_info()
        self.rss.set(memory.rss)
        self.private_memory.set(memory.rss - getattr(memory, "shared", 0))
        self.text_bytes.set(stats.text_cache_bytes)
        self._last = stats

    def record_timings(self, operation: str, timings: dict[str, float]) -> None:
        """Observe the stages of one request in this replica (`Reply.timings`)."""
        self.stages.observe(operation, timings)
        if "embed" in timings:
            self.embed_latency.observe(timings["embed"])
        if "ground" in timings:
            self.concept_latency.observe(timings["ground"])
        if "decode" in timings:
            self.decode_latency.observe(timings["decode"] + timings.get("encode", 0.0))

    def record_handoff(self, direction: str, seconds: float) -> None:
        """One image moved ("sent", "received" or "borrowed"), in `seconds`."""
        self.handoff_images.inc(tags={"direction": direction})
        self.handoff_latency.observe(seconds, tags={"direction": direction})


class VideoMetrics:
    """Video sessions of a replica: how many, the bytes they hold, the frames tracked."""

    def __init__(self) -> None:
        self.sessions = metrics.Gauge(
            "sam3_video_sessions", description="Open video sessions on the replica."
        )
        self.bytes = metrics.Gauge(
            "sam3_video_session_bytes",
            description="Bytes video sessions hold: kept (compressed) frames, and sam3's "
            "tracking state.",
            tag_keys=("kind",),
        )
        self.frames = metrics.Counter(
            "sam3_video_frames_propagated",
            description="Frames tracked by propagate_in_video (rate(): frames per second).",
        )
        self.frame_latency = metrics.Histogram(
            "sam3_video_frame_seconds",
            description="Time to track one frame in propagate_in_video.",
            boundaries=LATENCY_BUCKETS_S,
        )
        self.budget = metrics.Gauge(
            "sam3_video_session_budget_bytes",
            description="The video sessions' byte budget (SAM3_VIDEO_SESSION_BYTES, or the "
            "memory plan's share).",
        )
        self.moved = metrics.Counter(
            "sam3_video_sessions_moved",
            description="Video sessions moved between replicas by scale events: sent, or "
            "received (and kept).",
            tag_keys=("direction",),
        )
        self.move_latency = metrics.Histogram(
            "sam3_video_session_move_seconds",
            description="Time to move one video session (export and send, or adopt).",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("direction",),
        )
        self._frames = 0

    def record_handoff(self, direction: str, seconds: float) -> None:
        """One session moved ("sent" or "received"), in `seconds`."""
        self.moved.inc(tags={"direction": direction})
        self.move_latency.observe(seconds, tags={"direction": direction})

    def record_stats(self, stats: VideoStats) -> None:
        self.sessions.set(stats.sessions)
        self.bytes.set(stats.frame_bytes, tags={"kind": "frames"})
        self.bytes.set(stats.state_bytes, tags={"kind": "state"})
        self.budget.set(stats.budget_bytes)
        if stats.frames_propagated > self._frames:
            self.frames.inc(stats.frames_propagated - self._frames)
        self._frames = stats.frames_propagated
