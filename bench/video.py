"""Video sessions against sam3's own predictor, side by side in one run: propagation frames
per second and bytes held per session per frame, and whether the masks are equal. Random
weights (`bench.video_reference.random_video_model`: made to detect a few objects).

    python -m bench.video --frames 8 --longer 32   # narrow preset (1008 px, narrow widths)

Also: where each side's bytes are (`bench.video_bytes`), a session's bytes at rest (compacted
as after SAM3_VIDEO_CACHE_IDLE_SECONDS idle), the bytes each frame beyond the shorter clip's
adds, and the process's RSS across five sessions opened, prompted, propagated and closed
(memory handed back on close).

Writes bench/results/video.json. sam3's predictor with its defaults keeps every frame at the
model's input size (1008² float16 for frames read from a folder) beside its tracking state;
a session here keeps the frames as sent (JPEG) and decodes each when it is read. Both run the
same sam3 model object on the same JPEG frames (a panning view over a smooth picture), one
torch thread, on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

from bench.video_bytes import state_breakdown
from bench.video_reference import ReferencePredictor, frame_folder, random_video_model
from sam3_core.architecture import ARCHITECTURES
from sam3_core.settings import RequestLimits, VideoSettings
from sam3_core.video_sessions import (
    VideoSessions,
    VideoSource,
    frame_outputs,
    state_nbytes,
)

RESULTS = Path(__file__).parent / "results" / "video.json"
HEIGHT, WIDTH = 360, 640


def panning_frames(count: int, seed: int = 0) -> list[bytes]:
    """`count` JPEG frames (quality 85) of a view panning 8 px a frame over a smooth picture."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    scene = Image.fromarray(small).resize((WIDTH + 8 * count, HEIGHT), Image.BICUBIC)
    frames = []
    for index in range(count):
        buffer = io.BytesIO()
        scene.crop((8 * index, 0, 8 * index + WIDTH, HEIGHT)).save(buffer, "JPEG", quality=85)
        frames.append(buffer.getvalue())
    return frames


def run(preset: str, count: int) -> dict:
    torch.set_num_threads(1)
    model = random_video_model(ARCHITECTURES[preset])
    frames = panning_frames(count)

    sessions = VideoSessions(model, VideoSettings(), RequestLimits(), torch.device("cpu"))
    key = sessions.start_session(VideoSource(frames=tuple(frames))).key
    ours_prompt = sessions.add_prompt(key, 0, text="object")
    started = time.perf_counter()
    ours = list(sessions.propagate_in_video(key, "forward"))
    ours_seconds = time.perf_counter() - started
    session = sessions._sessions[key]
    ours_bytes = {"frames": session.frames.nbytes, "state": state_nbytes(session.state)}
    ours_fields = state_breakdown(session.state)
    ours_at_rest = sessions.compact(key)  # idle for SAM3_VIDEO_CACHE_IDLE_SECONDS
    sessions.close_session(key)

    reference = ReferencePredictor(model)
    with frame_folder(frames, "jpg") as folder:
        session_id = reference.request(type="start_session", resource_path=folder)["session_id"]
    answer = reference.request(type="add_prompt", session_id=session_id, frame_index=0,
                               text="object")  # fmt: skip
    started = time.perf_counter()
    lines = reference.stream(
        type="propagate_in_video", session_id=session_id, propagation_direction="forward"
    )
    theirs_seconds = time.perf_counter() - started
    state = reference._ALL_INFERENCE_STATES[session_id]["state"]
    images = state["input_batch"].img_batch
    theirs_fields = state_breakdown(state)
    theirs_bytes = {
        "frames": images.numel() * images.element_size(),
        "state": state_nbytes(state) - images.numel() * images.element_size(),
    }
    theirs = [frame_outputs(line["frame_index"], line["outputs"]) for line in lines]
    expected = [frame_outputs(answer["frame_index"], answer["outputs"]), *theirs]
    equal = all(
        np.array_equal(a.masks, b.masks) and np.array_equal(a.obj_ids, b.obj_ids)
        for a, b in zip([ours_prompt, *ours], expected, strict=True)
    )
    objects = sorted({int(i) for frame in ours for i in frame.obj_ids})

    reference.request(type="close_session", session_id=session_id)

    def side(seconds: float, held: dict[str, int], where: dict[str, int]) -> dict:
        return {
            "frames_per_second": count / seconds,
            "bytes": held,
            "bytes_per_frame": sum(held.values()) / count,
            "frame_bytes_per_frame": held["frames"] / count,
            "state_fields": where,
        }

    return {
        "preset": preset,
        "image_size": model.image_size,
        "frames": count,
        "video": [HEIGHT, WIDTH],
        "objects_tracked": len(objects),
        "masks_equal": equal,
        "ours": side(ours_seconds, ours_bytes, ours_fields),
        "sam3_predictor": side(theirs_seconds, theirs_bytes, theirs_fields),
        "ratio_bytes_per_frame": sum(ours_bytes.values()) / sum(theirs_bytes.values()),
        "ours_at_rest_bytes": ours_at_rest,
        "ratio_bytes_per_frame_at_rest": ours_at_rest / sum(theirs_bytes.values()),
    }


def per_added_frame(short: dict, longer: dict) -> dict:
    """What each frame beyond the shorter clip's adds to a session, on each side: the bytes
    of the longer run less the shorter's, over the frames added."""
    added = longer["frames"] - short["frames"]

    def growth(side: str) -> float:
        return (sum(longer[side]["bytes"].values()) - sum(short[side]["bytes"].values())) / added

    ours, theirs = growth("ours"), growth("sam3_predictor")
    return {"ours": ours, "sam3_predictor": theirs, "ratio": ours / theirs}


def rss_over_cycles(
    sessions: VideoSessions, frames: tuple[bytes, ...], cycles: int
) -> tuple[list[int], int, int]:
    """What each of `cycles` sessions held, and RSS (psutil) before and after them: each
    opened, prompted, propagated and closed, after one that warms allocators and sam3's
    lazily built buffers."""
    process = psutil.Process()

    def cycle() -> int:
        key = sessions.start_session(VideoSource(frames=frames)).key
        sessions.add_prompt(key, 0, text="object")
        list(sessions.propagate_in_video(key, "forward"))
        held = sessions.session_bytes(key)
        sessions.close_session(key)
        return held

    cycle()
    gc.collect()
    before = process.memory_info().rss
    held = [cycle() for _ in range(cycles)]
    gc.collect()
    return held, before, process.memory_info().rss


def rss_cycles(preset: str, count: int, cycles: int = 5) -> dict:
    """RSS before and after `cycles` sessions of `count` frames (`rss_over_cycles`)."""
    torch.set_num_threads(1)
    model = random_video_model(ARCHITECTURES[preset])
    sessions = VideoSessions(model, VideoSettings(), RequestLimits(), torch.device("cpu"))
    held, before, after = rss_over_cycles(sessions, tuple(panning_frames(count)), cycles)
    return {
        "preset": preset,
        "frames": count,
        "cycles": cycles,
        "session_bytes": max(held),
        "rss_before": before,
        "rss_after": after,
        "rss_growth": after - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="narrow", choices=sorted(ARCHITECTURES))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--longer", type=int, default=32, help="frames of the longer clip")
    parser.add_argument("--cycles-preset", default="tiny", choices=sorted(ARCHITECTURES))
    parser.add_argument(
        "--rss-only", action="store_true", help="measure the RSS cycles alone, into the results"
    )
    args = parser.parse_args()
    # First, in a fresh process: memory the larger runs free later would hide a leak.
    cycles = rss_cycles(args.cycles_preset, 3)
    if args.rss_only:
        result = json.loads(RESULTS.read_text())
    else:
        result = run(args.preset, args.frames)
        result["longer"] = run(args.preset, args.longer)
        result["per_added_frame"] = per_added_frame(result, result["longer"])
    result["rss_cycles"] = cycles
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
