"""The full-size video model: our build is sam3's `build_sam3_video_model` (the same tensors,
names and shapes, so its checkpoints load), and a session on it gives the results of sam3's
predictor on sam3's own build, once, on two small frames (random weights). The session runs on
both trunks cut alike to their first global block: the trunk at full depth is sam3's in
`test_full_size`, and the whole depth cost this test two thirds of its time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.video_reference import ReferencePredictor, detecting, frame_folder
from sam3_core.architecture import FULL
from sam3_core.sam3_compat import building_on, clip_vocabulary, quiet_sam3
from sam3_core.settings import RequestLimits, VideoSettings
from sam3_core.video_architecture import build_video_model
from sam3_core.video_sessions import VideoSessions, VideoSource, frame_outputs
from tests.conftest import encode_image, random_pixels

with quiet_sam3():
    from sam3.model.vitdet import ViT
    from sam3.model_builder import build_sam3_video_model

pytestmark = pytest.mark.slow


def cut_trunks(model: torch.nn.Module) -> list[int]:
    """Keep each ViT's blocks up to its first global one, whose output then ends the trunk as
    its last one's does (`ln_post`); the number of blocks kept, per trunk."""
    kept = []
    for trunk in (m for m in model.modules() if isinstance(m, ViT)):
        kept.append(trunk.full_attn_ids[0] + 1)
        trunk.blocks = trunk.blocks[: kept[-1]]
        trunk.full_attn_ids = trunk.full_attn_ids[:1]
    return kept


def test_full_size_video_model_is_sam3s_and_tracks_as_its_predictor() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with building_on(torch.device("cpu")):
            theirs = build_sam3_video_model(
                bpe_path=clip_vocabulary(), load_from_HF=False, device="cpu"
            ).eval()
    ours = build_video_model(FULL, clip_vocabulary())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert cut_trunks(ours) == cut_trunks(theirs) == [FULL.vit_global_blocks[0] + 1]
    detecting(ours)
    detecting(theirs)
    if hasattr(theirs.tracker, "bf16_context"):  # entered process-wide by sam3's builder
        with quiet_sam3():
            theirs.tracker.bf16_context.__exit__(None, None, None)

    frames = [encode_image(random_pixels(seed, 24, 32), "JPEG") for seed in range(2)]
    sessions = VideoSessions(ours, VideoSettings(), RequestLimits(), torch.device("cpu"))
    key = sessions.start_session(VideoSource(frames=tuple(frames))).key
    reference = ReferencePredictor(theirs)
    with frame_folder(frames, "jpg") as folder:
        session_id = reference.request(type="start_session", resource_path=folder)["session_id"]

    mine = [sessions.add_prompt(key, 0, text="cat")]
    mine += list(sessions.propagate_in_video(key, "forward", 0, 1))
    answer = reference.request(type="add_prompt", session_id=session_id, frame_index=0, text="cat")
    expected = [frame_outputs(answer["frame_index"], answer["outputs"])]
    lines = reference.stream(
        type="propagate_in_video",
        session_id=session_id,
        propagation_direction="forward",
        start_frame_index=0,
        max_frame_num_to_track=1,
    )
    expected += [frame_outputs(line["frame_index"], line["outputs"]) for line in lines]
    assert [f.frame_index for f in mine] == [f.frame_index for f in expected] == [0, 0, 1]
    for a, b in zip(mine, expected, strict=True):
        np.testing.assert_array_equal(a.obj_ids, b.obj_ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.masks, b.masks)
