"""The demo model's tracking stage: the tracker's memory taught on clips of moving shapes
(`scenes.make_clip`), through sam3's own per-frame tracking call (`Sam3TrackerBase.track_step`,
the call its `forward_tracking` loop and its video predictor make for every frame).

A clip's first frame gets a click on one shape (a conditioning frame, decoded as a click
always is); each later frame is decoded from memory alone and compared with that shape's
mask there, with sam3's focal and dice losses and SAM2's object-score loss. Only what
tracking alone reads is trained: the memory encoder, the memory attention, the object
pointers and their temporal encodings, and the mask decoder's object-score head. The trunk,
neck, prompt encoder and the rest of the mask decoder stay as stage 1 left them, so clicks
and boxes keep their masks. (sam3's `forward_tracking` itself cannot be called: in 0.1.4 it passes
`track_step` two arguments, `gt_masks` and `frames_to_add_correction_pt`, that it does not
take; this loop is that loop's body without them.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sam3_core.architecture import neck_features
from sam3_core.demo import parallel
from sam3_core.demo.scenes import Clip, make_clip
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import quiet_sam3, running_on

with quiet_sam3():
    from sam3.train.loss.loss_fns import dice_loss, sigmoid_focal_loss

# The tracker's parameters that only tracking reads (names in `Sam3TrackerBase`). The mask
# decoder's object-score head is one: clicks and boxes never read it, but the tracker blanks
# every mask whose score is below 0 (stage 1 left it at its initialisation, ~-0.2 for all).
TRACKING_PARTS = (
    "maskmem_backbone.",
    "transformer.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "maskmem_tpos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "sam_mask_decoder.pred_obj_score_head.",
)
FOCAL_WEIGHT, DICE_WEIGHT, CLASS_WEIGHT = 20.0, 1.0, 1.0
# SAM2's object-score loss: focal with alpha 0.5 and gamma 0 (a balanced cross-entropy).
OBJECT_ALPHA, OBJECT_GAMMA = 0.5, 0.0
LOSS_SIZE = 128  # as stage 1: the low-res logits upsampled to this side
# A true mask as logits for `true_memory`: sigmoid(10) is 1 to within 5e-5.
TRUE_LOGIT = 10.0


def training_mode(model: InteractiveSam3) -> list[torch.nn.Parameter]:
    """Freeze everything but `TRACKING_PARTS`. The tracker stays in eval mode, so that it
    tracks here exactly as it does when serving (sam3 0.1.4's tracker cannot run in training
    mode outside its trainer: `_forward_sam_heads` then reads `teacher_force_obj_scores_for_mem`,
    which its constructor never sets)."""
    tracker = model.predictor.model
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = []
    for name, parameter in tracker.named_parameters():
        if name.startswith(TRACKING_PARTS):
            parameter.requires_grad_(True)
            trained.append(parameter)
    return trained


def clip_batch(rng: np.random.Generator, batch: int, frames: int) -> list[tuple[Clip, int]]:
    """`batch` training clips (seeds below the held-out ones), one shape of each to track."""
    chosen: list[tuple[Clip, int]] = []
    while len(chosen) < batch:
        width, height = (int(v) for v in rng.integers(160, 336, size=2))
        clip = make_clip(int(rng.integers(0, 2**31 - 1)), frames, width, height)
        if len(clip.kinds):
            chosen.append((clip, int(rng.integers(len(clip.kinds)))))
    return chosen


def frame_features(
    model: InteractiveSam3, clips: list[tuple[Clip, int]]
) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]], list[tuple[int, int]]]:
    """Every frame's tracker inputs as `Sam3TrackerBase.forward_image` makes them (the neck's
    levels, the two finest through the decoder's `conv_s0`/`conv_s1`), flattened (HW, B, C)
    per level: per frame, the levels and their position encodings, and the levels' sizes."""
    tracker = model.predictor.model
    frames = clips[0][0].frames.shape[0]
    pixels = torch.stack(
        [
            model._transform(torch.from_numpy(clip.frames[t]).permute(2, 0, 1))
            for t in range(frames)
            for clip, _ in clips
        ]
    )
    with torch.no_grad():
        fpn, pos = neck_features(model.image_encoder, model.image_encoder.trunk(pixels)[-1])
        decoder = tracker.sam_mask_decoder
        fpn = [decoder.conv_s0(fpn[0]), decoder.conv_s1(fpn[1]), fpn[2]]
    sizes = [tuple(level.shape[-2:]) for level in fpn]
    batch = len(clips)

    def per_frame(levels: list[torch.Tensor], t: int) -> list[torch.Tensor]:
        return [x[t * batch : (t + 1) * batch].flatten(2).permute(2, 0, 1) for x in levels]

    return (
        [per_frame(fpn, t) for t in range(frames)],
        [per_frame(pos, t) for t in range(frames)],
        sizes,
    )


def first_clicks(model: InteractiveSam3, clips: list[tuple[Clip, int]]) -> dict:
    """The first frame's click on each tracked shape, in model-input pixels."""
    side = model.arch.image_size
    coords = []
    for clip, index in clips:
        height, width = clip.frames.shape[1:3]
        x, y = clip.first_click(index)
        coords.append([[x * side / width, y * side / height]])
    return {
        "point_coords": torch.tensor(coords, dtype=torch.float32),
        "point_labels": torch.ones(len(clips), 1, dtype=torch.int32),
    }


def targets(clips: list[tuple[Clip, int]], t: int, side: int = LOSS_SIZE) -> torch.Tensor:
    """The tracked shapes' true masks in frame `t` on a (side, side) grid, by area: (B, 1, S, S)."""
    masks = [
        F.interpolate(
            torch.from_numpy(clip.masks[index, t]).float()[None, None],
            size=(side, side),
            mode="area",
        )[0]
        for clip, index in clips
    ]
    return (torch.stack(masks) > 0.5).float()


def true_memory(
    tracker: torch.nn.Module,
    clips: list[tuple[Clip, int]],
    t: int,
    feats: list[torch.Tensor],
    sizes: list[tuple[int, int]],
    output: dict,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Frame `t`'s memory as `track_step` encodes it (`_encode_new_memory`), from the tracked
    shapes' true masks and presence instead of the tracker's: (features, position encodings)."""
    truth = targets(clips, t, tracker.image_size)
    present = truth.flatten(1).amax(dim=1, keepdim=True) > 0
    return tracker._encode_new_memory(
        image=None,
        current_vision_feats=feats,
        feat_sizes=sizes,
        pred_masks_high_res=truth * 2 * TRUE_LOGIT - TRUE_LOGIT,
        object_score_logits=present.float() * 2 * TRUE_LOGIT - TRUE_LOGIT,
        is_mask_from_pts=False,
        output_dict=output,
        is_init_cond_frame=False,
    )


def tracking_step(
    model: InteractiveSam3,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    batch: int,
    frames: int,
    teacher: float = 0.0,
) -> dict[str, float]:
    """One step: `batch` clips of `frames` frames, one shape of each clicked in frame 0 and
    tracked through the others by `track_step`, the losses summed over the tracked frames.
    With probability `teacher`, the step is taught with its tracked frames' memories made
    from the true masks (`true_memory`) rather than from the tracker's own; each frame's
    masks are still decoded from memory and trained alike."""
    tracker = model.predictor.model
    clips = clip_batch(rng, batch, frames)
    feats, pos, sizes = frame_features(model, clips)
    output: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    forced = bool(teacher > 0 and rng.random() < teacher)
    focal_sum = dice_sum = class_sum = torch.zeros(())
    iou_sum = 0.0
    for t in range(frames):
        with running_on(torch.device("cpu")):  # sam3's tracker moves memories with `.cuda()`
            out = tracker.track_step(
                frame_idx=t,
                is_init_cond_frame=t == 0,
                current_vision_feats=feats[t],
                current_vision_pos_embeds=pos[t],
                feat_sizes=sizes,
                image=None,
                point_inputs=first_clicks(model, clips) if t == 0 else None,
                mask_inputs=None,
                output_dict=output,
                num_frames=frames,
                run_mem_encoder=not (forced and t > 0),
            )
            if forced and t > 0:
                out["maskmem_features"], out["maskmem_pos_enc"] = true_memory(
                    tracker, clips, t, feats[t], sizes, output
                )
        output["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
        target = targets(clips, t)
        # SAM2's multi-step loss as sam3 keeps it (commented out) in `loss_fns`: the masks'
        # losses count where the shape is in view; whether it is, the object score learns
        # (on the clicked frame too, whose mask the frozen decoder makes).
        present = target.flatten(1).any(dim=1, keepdim=True).float()
        score = out["object_score_logits"]
        class_sum = class_sum + sigmoid_focal_loss(
            score, present, batch, alpha=OBJECT_ALPHA, gamma=OBJECT_GAMMA, triton=False
        )
        if t == 0:
            continue
        logits = F.interpolate(
            out["pred_masks"], size=(LOSS_SIZE, LOSS_SIZE), mode="bilinear", align_corners=False
        )
        focal = sigmoid_focal_loss(logits, target, batch, loss_on_multimask=True, triton=False)
        focal_sum = focal_sum + (focal * present).sum()
        dice = dice_loss(logits, target, batch, loss_on_multimask=True)
        dice_sum = dice_sum + (dice * present).sum()
        with torch.no_grad():
            found = logits > 0
            inter = (found & (target > 0)).sum((1, 2, 3)).float()
            union = (found | (target > 0)).sum((1, 2, 3)).float().clamp(min=1)
            iou_sum += float((inter / union).mean())
    tracked = frames - 1
    loss = (FOCAL_WEIGHT * focal_sum + DICE_WEIGHT * dice_sum + CLASS_WEIGHT * class_sum) / tracked
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parallel.mean_gradients(optimizer.param_groups[0]["params"])
    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 0.1)
    optimizer.step()
    return {
        "track_focal": float(focal_sum.detach()) / tracked,
        "track_dice": float(dice_sum.detach()) / tracked,
        "track_class": float(class_sum.detach()) / tracked,
        "track_train_iou": iou_sum / tracked,
        "track_loss": float(loss.detach()),
    }
