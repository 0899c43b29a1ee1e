"""Train the demo model (SAM3's classes at the `tiny` size) on synthetic shapes, on the CPU.

    python -m sam3_core.demo.train --workers 2 --out s1.pt --record s1.json
    python -m sam3_core.demo.train --workers 2 --init s1.pt --steps 0 --seed 1 \
        --track-teacher-steps 400 --track-steps 800 250 --track-frames 8 16 \
        --track-lr 2e-3 5e-4 --out sam3_core/demo/shapes.pt --record sam3_core/demo/shapes.json
    python -m sam3_core.demo.evaluate sam3_core/demo/shapes.pt --record sam3_core/demo/shapes.json

Interactive segmentation, SAM-style: each step embeds `--batch` scenes once and decodes
`--objects` instances of each (as SAM trains several masks per image embedding) from a first
prompt (a centre click, a random click, a jittered box, or positive and negative clicks),
then one or two refinement rounds that add a corrective click where the mask is most wrong
and feed the previous round's low-res logits back as the mask input (one mask or three,
as clients may ask). Losses are sam3's (`sam3.train.loss.loss_fns`: focal 20, dice 1,
IoU-prediction MSE 1, the lowest focal+dice of the proposals trained, every IoU prediction
supervised). Seeded: every run draws the same scenes, prompts and initial weights
(`--time-budget` only stops early), but torch's arithmetic on 2 threads is not repeated bit
for bit, and a rerun's losses part from the record's in the fourth decimal by step 150 (in
`--workers` processes of one thread each, the losses repeat).
Round 0 is hinted at first (`hint_masks`, `--hint-fade`: why at `HINT_SIGMA`). The shipped
`shapes.pt` is the output of the first two commands above (its record: `shapes.json`): stage 1
with the defaults in two processes (`sam3_core.demo.parallel`), 7000 steps, 25.9 min on this
idle machine; then stage 3 from it, the memories of a share of its first 400 steps encoded
from the true masks (`tracking.true_memory`), 13.3 min: 39.3 min in all, within the 40-minute
budget. The third command scores it into its record (40 held-out scenes, 32 clips), as
`--eval-scenes` and `--eval-clips` would.

What was measured on the way (each stage's runs, those not shipped and why, what was tried
for concepts): `docs/demo_model.md`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sam3_core.architecture import Architecture, neck_features
from sam3_core.demo import concepts, evaluate, parallel, tracking
from sam3_core.demo.evaluate import corrective_click
from sam3_core.demo.scenes import Scene, make_scene, resized_mask
from sam3_core.demo.weights import (
    DEMO_ARCHITECTURE,
    build_untrained,
    record_beside,
    save_demo_checkpoint,
)
from sam3_core.model import InteractiveSam3
from sam3_core.sam3_compat import quiet_sam3
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_checkpoint

with quiet_sam3():
    from sam3.train.loss.loss_fns import dice_loss, iou_loss, sigmoid_focal_loss

logger = logging.getLogger("sam3_core.demo.train")

FOCAL_WEIGHT, DICE_WEIGHT, IOU_WEIGHT = 20.0, 1.0, 1.0
# Losses are computed on the logits upsampled to this side (the model's input is 224 px):
# a quarter of the pixels of 224, for masks of shapes that are no finer than this.
LOSS_SIZE = 128
# Round 0's hint (`hint_masks`): a decoder trained from scratch first answers every prompt
# with the same whole-image mask and stays there for a long time (in the 3000-step run
# shipped before, until step ~1300) although the trunk's features already tell the shapes
# apart. A soft disc around the click as the mask input, given at every step at first and
# less often until `--hint-fade` of the steps, ends that plateau by step ~400; the steps
# after train as the service decodes, without it.
HINT_SIGMA = 3.0


def batch_features(
    model: InteractiveSam3, pixels: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`InteractiveSam3.embedding_from_trunk` for a batch, with gradients: (embed, [s0, s1])."""
    tracker = model.predictor.model
    trunk = model.image_encoder.trunk(pixels)[-1]
    fpn, _ = neck_features(model.image_encoder, trunk)
    high_res = [tracker.sam_mask_decoder.conv_s0(fpn[0]), tracker.sam_mask_decoder.conv_s1(fpn[1])]
    embed = fpn[2] + tracker.no_mem_embed.view(1, -1, 1, 1)
    return embed, high_res


def decode_batch(
    model: InteractiveSam3,
    embed: torch.Tensor,
    high_res: list[torch.Tensor],
    coords: torch.Tensor,
    labels: torch.Tensor,
    mask_input: torch.Tensor | None,
    multimask: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sam3's prompt encoder and mask decoder on B (image, prompt) pairs: (B, M, L, L) logits
    and (B, M) predicted IoUs. Coordinates are in model-input pixels."""
    tracker = model.predictor.model
    sparse, dense = tracker.sam_prompt_encoder(
        points=(coords, labels), boxes=None, masks=mask_input
    )
    logits, ious, _, _ = tracker.sam_mask_decoder(
        image_embeddings=embed,
        image_pe=tracker.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=high_res,
    )
    return logits, ious


def sam_losses(logits: torch.Tensor, ious: torch.Tensor, targets: torch.Tensor) -> dict:
    """sam3's focal, dice and IoU losses on (B, M, S, S) full-size logits vs (B, 1, S, S)."""
    targets = targets.expand_as(logits)
    batch = logits.shape[0]
    focal = sigmoid_focal_loss(logits, targets, batch, loss_on_multimask=True, triton=False)
    dice = dice_loss(logits, targets, batch, loss_on_multimask=True)
    iou = iou_loss(logits, targets, ious, batch, loss_on_multimask=True)
    best = torch.argmin(focal * FOCAL_WEIGHT + dice * DICE_WEIGHT, dim=-1)
    rows = torch.arange(batch)
    return {
        "focal": focal[rows, best].sum(),
        "dice": dice[rows, best].sum(),
        "iou": iou.mean(dim=-1).sum(),
    }


def _first_prompt(rng: np.random.Generator, scene: Scene, index: int) -> list[tuple]:
    """(x, y, label) points in scene pixels; a box is two points labelled 2 and 3."""
    mask = scene.masks[index]
    ys, xs = np.nonzero(mask)
    kind = rng.random()
    if kind < 0.35:
        return [(*scene.centre_click(index), 1)]
    if kind < 0.6:
        i = rng.integers(len(xs))
        return [(xs[i] + 0.5, ys[i] + 0.5, 1)]
    if kind < 0.85:
        x0, y0, x1, y1 = scene.boxes[index]
        w, h = x1 - x0, y1 - y0
        noise = rng.normal(0, 0.07, size=4) * np.array([w, h, w, h])
        height, width = mask.shape
        x0, x1 = np.clip([x0 + noise[0], x1 + noise[2]], 0, width)
        y0, y1 = np.clip([y0 + noise[1], y1 + noise[3]], 0, height)
        return [(x0, y0, 2), (x1, y1, 3)]
    points = []
    for i in rng.integers(len(xs), size=int(rng.integers(1, 4))):
        points.append((xs[i] + 0.5, ys[i] + 0.5, 1))
    others = [j for j in range(len(scene.kinds)) if j != index]
    for _ in range(int(rng.integers(1, 3))):
        if others and rng.random() < 0.6:
            other = scene.masks[others[rng.integers(len(others))]]
        else:
            other = ~(scene.masks.any(axis=0))
        oy, ox = np.nonzero(other)
        if len(ox):
            i = rng.integers(len(ox))
            points.append((ox[i] + 0.5, oy[i] + 0.5, 0))
    return points


def _pad(prompts: list[list[tuple]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    coords = torch.zeros(len(prompts), length, 2)
    labels = torch.full((len(prompts), length), -1, dtype=torch.int32)
    for i, points in enumerate(prompts):
        for j, (x, y, label) in enumerate(points):
            coords[i, j] = torch.tensor([x, y])
            labels[i, j] = label
    return coords, labels


def loss_target(mask: np.ndarray, size: int) -> torch.Tensor:
    """A (H, W) bool mask as the (size, size) float target the losses compare logits with
    (`scenes.resized_mask`: why by area)."""
    return torch.from_numpy(resized_mask(mask, size)).float()


def make_batch(
    rng: np.random.Generator, model: InteractiveSam3, batch: int, size: int, objects: int = 1
) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple]]]:
    """B scenes of random sizes stretched to the model's input as `encode` does: pixels
    (B, ...), and for `objects` instances of each scene (B x objects samples, as SAM trains
    several masks per image embedding): targets (B·K, 1, S, S) float and first prompts in
    model pixels."""
    pixels, targets, prompts = [], [], []
    while len(pixels) < batch:
        width, height = (int(v) for v in rng.integers(160, 336, size=2))
        scene = make_scene(int(rng.integers(0, 2**31 - 1)), width, height)
        if not scene.kinds:
            continue
        image = torch.from_numpy(scene.image).permute(2, 0, 1)
        pixels.append(model._transform(image))
        count = len(scene.kinds)
        chosen = rng.choice(count, size=objects, replace=objects > count)
        sx, sy = model.arch.image_size / width, model.arch.image_size / height
        for index in chosen.tolist():
            targets.append(loss_target(scene.masks[index], size)[None])
            prompts.append(
                [(x * sx, y * sy, label) for x, y, label in _first_prompt(rng, scene, index)]
            )
    return torch.stack(pixels), torch.stack(targets), prompts


def hint_masks(prompts: list[list[tuple]], image_size: int, side: int) -> torch.Tensor:
    """(B, 1, side, side) mask-input logits: a soft disc (+6 at its centre, -6 far away,
    sigma 3 low-res pixels) at the mean of each prompt's positive points or box corners."""
    grid = torch.arange(side) + 0.5
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    discs = []
    for points in prompts:
        positive = [(x, y) for x, y, label in points if label in (1, 2, 3)]
        cx = sum(x for x, _ in positive) / len(positive) * side / image_size
        cy = sum(y for _, y in positive) / len(positive) * side / image_size
        squared = (xs - cx) ** 2 + (ys - cy) ** 2
        discs.append(12 * torch.exp(-squared / (2 * HINT_SIGMA**2)) - 6)
    return torch.stack(discs)[:, None]


def hint_probability(step: int, steps: int, fade: float) -> float:
    """How often round 0 gets `hint_masks`: 1 at the start, 0 from `fade` of the steps on."""
    return max(0.0, 1.0 - step / max(1.0, fade * steps)) if fade > 0 else 0.0


def train_step(
    model: InteractiveSam3,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    batch: int,
    rounds: int,
    objects: int = 1,
    hint: float = 0.0,
) -> dict[str, float]:
    """One optimiser step; with probability `hint` round 0's mask input is `hint_masks`."""
    size = LOSS_SIZE
    scale = model.arch.image_size / size
    pixels, targets, prompts = make_batch(rng, model, batch, size, objects)
    embed, high_res = batch_features(model, pixels)
    if objects > 1:
        embed = embed.repeat_interleave(objects, dim=0)
        high_res = [feat.repeat_interleave(objects, dim=0) for feat in high_res]
    batch = batch * objects
    truth = targets[:, 0].bool().numpy()
    mask_input, total, logged = None, 0.0, {}
    if hint and rng.random() < hint:
        mask_input = hint_masks(prompts, model.arch.image_size, embed.shape[-1] * 4)
    for round_ in range(rounds):
        coords, labels = _pad(prompts)
        # The service lets clients choose: the page asks for one mask once it refines
        # (mask token 0), clients default to three proposals (tokens 1-3); train both.
        multimask = round_ == 0 or bool(rng.random() < 0.5)
        low_res, ious = decode_batch(model, embed, high_res, coords, labels, mask_input, multimask)
        full = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        losses = sam_losses(full, ious, targets)
        loss = FOCAL_WEIGHT * losses["focal"] + DICE_WEIGHT * losses["dice"] + losses["iou"]
        total = total + loss
        logged.update({f"r{round_}_{k}": float(v.detach()) for k, v in losses.items()})
        best = ious.argmax(dim=1)
        rows = torch.arange(batch)
        mask_input = low_res[rows, best][:, None].detach().clamp(-32, 32)
        predicted = (full[rows, best] > 0).detach().numpy()
        logged[f"r{round_}_train_iou"] = float(
            np.mean([evaluate.iou(p, t) for p, t in zip(predicted, truth, strict=True)])
        )
        for i in range(batch):
            x, y, label = corrective_click(predicted[i], truth[i])
            prompts[i] = [*prompts[i], (x * scale, y * scale, label)]
    optimizer.zero_grad(set_to_none=True)
    (total / rounds).backward()
    parallel.mean_gradients(model.parameters())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    logged["loss"] = float(total.detach()) / rounds
    return logged


def learning_rate(step: int, steps: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def _log_window(window: list[dict], step: int, started: float, history: list[dict]) -> None:
    """The window's mean per key (over the steps and the processes) into `history`."""
    mean = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
    mean = {k: round(v, 4) for k, v in parallel.mean_metrics(mean).items()}
    history.append({"step": step, "seconds": round(time.perf_counter() - started), **mean})
    if parallel.rank() == 0:
        logger.info("step %d %s", step, mean)
    window.clear()


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(this process's data, the schedule every process shares: a step's rounds). In one
    process both are the one stream every earlier run drew from."""
    if parallel.workers() == 1:
        rng = np.random.default_rng(seed)
        return rng, rng
    return (
        np.random.default_rng([seed, parallel.rank()]),
        np.random.default_rng([seed, parallel.workers()]),
    )


def _share(count: int) -> int:
    """This process's part of a step's `count` scenes or clips."""
    return count // parallel.workers()


def _out_of_time(started: float, budget: float) -> bool:
    """Whether `budget` seconds (0: no budget) since `started` are spent, in any process: all
    the processes stop at the same step."""
    return bool(budget) and parallel.any_process(time.perf_counter() - started > budget)


def _save(model: InteractiveSam3, out: str) -> None:
    if out and parallel.rank() == 0:
        save_demo_checkpoint(model, Path(out))


def interactive_stage(model: InteractiveSam3, args: argparse.Namespace) -> tuple[int, list]:
    """Stage 1: the trunk, the neck and the tracker's prompt encoder and mask decoder."""
    torch.manual_seed(args.seed)
    for block in model.image_encoder.trunk.blocks:
        block.drop_path = torch.nn.Identity()  # a small model underfits: no stochastic depth
    model.train()
    parameters = [p for n, p in model.named_parameters() if not n.startswith("concepts.")]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    rng, schedule = _streams(args.seed)
    history: list[dict] = []
    window: list[dict] = []
    started = time.perf_counter()
    for step in range(args.steps):
        if _out_of_time(started, args.time_budget):
            if parallel.rank() == 0:
                logger.warning("time budget reached after %d of %d steps", step, args.steps)
            return step, history
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        rounds = 2 if schedule.random() < 0.7 else 3
        hint = hint_probability(step, args.steps, args.hint_fade)
        window.append(
            train_step(model, optimizer, rng, _share(args.batch), rounds, args.objects, hint)
        )
        if (step + 1) % args.log_every == 0:
            _log_window(window, step + 1, started, history)
        if (step + 1) % args.save_every == 0:
            _save(model, args.out)
    return args.steps, history


def concept_stage(model: InteractiveSam3, args: argparse.Namespace) -> tuple[int, list]:
    """Stage 2: the concept parts only, the trunk frozen (`sam3_core.demo.concepts`). Seeded
    apart from stage 1, so that it repeats from stage 1's checkpoint (`--init`) alike."""
    torch.manual_seed(args.seed + 1)
    rng, _ = _streams(args.seed + 1)
    parameters = concepts.training_mode(model)
    optimizer = torch.optim.AdamW(parameters, lr=args.concept_lr, weight_decay=0.01)
    criterion = concepts.build_criterion()
    history: list[dict] = []
    window: list[dict] = []
    started = time.perf_counter()
    for step in range(args.concept_steps):
        if _out_of_time(started, args.concept_time_budget):
            if parallel.rank() == 0:
                logger.warning("time budget reached after %d of %d steps", step, args.concept_steps)
            return step, history
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.concept_steps, args.concept_lr, args.warmup)
        window.append(
            concepts.concept_step(
                model, optimizer, rng, criterion, _share(args.concept_batch), args.concept_queries
            )
        )
        if (step + 1) % args.log_every == 0:
            _log_window(window, step + 1, started, history)
        if (step + 1) % args.save_every == 0:
            _save(model, args.out)
    return args.concept_steps, history


def tracking_stage(model: InteractiveSam3, args: argparse.Namespace) -> tuple[int, list, list]:
    """Stage 3: the tracker's memory on clips of moving shapes (`sam3_core.demo.tracking`),
    everything clicks and boxes read frozen, in phases of longer clips (`--track-steps 800
    300`, `--track-frames 8 16`, `--track-lr 2e-3 5e-4`: a curriculum, as SAM2 trains on
    short clips before long ones). Each phase starts a fresh optimizer and schedule, seeded
    apart from the other stages and alike in every phase. Returns the steps, the losses
    (steps counted across phases) and each phase's facts."""
    parameters = tracking.training_mode(model)
    history: list[dict] = []
    phases: list[dict] = []
    done = 0
    stage_started = time.perf_counter()
    for steps, frames, peak_lr in zip(
        args.track_steps, args.track_frames, args.track_lr, strict=True
    ):
        torch.manual_seed(args.seed + 2)
        rng, _ = _streams(args.seed + 2)
        optimizer = torch.optim.AdamW(parameters, lr=peak_lr, weight_decay=0.01)
        window: list[dict] = []
        started = time.perf_counter()
        warmup = min(args.warmup, steps // 8)
        fade = args.track_teacher_steps if not phases else 0  # the first phase only
        trained = 0
        for step in range(steps):
            if _out_of_time(stage_started, args.track_time_budget):
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, peak_lr, warmup)
            teacher = max(0.0, 1 - step / fade) if fade else 0.0
            window.append(
                tracking.tracking_step(
                    model, optimizer, rng, _share(args.track_batch), frames, teacher
                )
            )
            trained = step + 1
            if trained % args.log_every == 0:
                _log_window(window, done + trained, stage_started, history)
        done += trained
        if trained < steps and parallel.rank() == 0:
            logger.warning("stage 3's time budget: %d of a phase's %d steps run", trained, steps)
        phases.append(
            {
                "steps": trained,
                "steps_planned": steps,
                "frames": frames,
                "peak_lr": peak_lr,
                "teacher_steps": fade,
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
        )
    return done, history, phases


@dataclass
class Trained:
    """What the stages did, as the first process saw it."""

    model: InteractiveSam3
    steps: int
    history: list[dict]
    concept_steps: int
    concept_history: list[dict]
    track_steps: int
    track_history: list[dict]
    track_phases: list[dict]
    stage1_wall: float
    stage2_wall: float
    stage3_wall: float


def run_stages(args: argparse.Namespace) -> Trained:
    """Build the model (seeded; `--init`'s weights) and run the stages asked for, in this
    process or as one of `--workers` (`sam3_core.demo.parallel`)."""
    model = build_untrained(seed=args.seed)
    if args.init:
        load_checkpoint(model, torch.load(args.init, map_location="cpu", weights_only=True))
    started = time.perf_counter()
    steps, history = interactive_stage(model, args) if args.steps else (0, [])
    stage1_wall = time.perf_counter() - started
    concept_steps, concept_history = concept_stage(model, args) if args.concept_steps else (0, [])
    stage2_wall = time.perf_counter() - started - stage1_wall
    track_steps, track_history, track_phases = (
        tracking_stage(model, args) if sum(args.track_steps) else (0, [], [])
    )
    stage3_wall = time.perf_counter() - started - stage1_wall - stage2_wall
    return Trained(
        model,
        *(steps, history, concept_steps, concept_history),
        *(track_steps, track_history, track_phases),
        *(stage1_wall, stage2_wall, stage3_wall),
    )


def _worker(args: argparse.Namespace, rendezvous: str, rank: int) -> None:
    """A process other than the first: trains alongside it, and leaves it the model."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", force=True)
    torch.set_num_threads(max(1, args.threads // args.workers))
    parallel.join(rendezvous, rank, args.workers)
    try:
        run_stages(args)
    finally:
        parallel.leave()


def run_stages_in_processes(args: argparse.Namespace) -> Trained:
    """`run_stages` in `--workers` processes of `--threads / --workers` threads each: this
    one and the others it starts (spawned: a fresh interpreter, as torch wants)."""
    context = torch.multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="sam3-demo-train-") as folder:
        rendezvous = str(Path(folder) / "rendezvous")
        others = [
            context.Process(target=_worker, args=(args, rendezvous, rank), daemon=True)
            for rank in range(1, args.workers)
        ]
        for process in others:
            process.start()
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, args.threads // args.workers))
        try:
            parallel.join(rendezvous, 0, args.workers)
            trained = run_stages(args)
        except BaseException:
            for process in others:
                process.terminate()
            raise
        finally:
            parallel.leave()
            for process in others:
                process.join()
            torch.set_num_threads(threads)
    failed = [p.exitcode for p in others if p.exitcode]
    if failed:
        raise RuntimeError(f"a training process failed (exit codes {failed})")
    return trained


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    arch: Architecture = DEMO_ARCHITECTURE
    started, cpu_started = time.perf_counter(), time.process_time()
    children_started = resource.getrusage(resource.RUSAGE_CHILDREN)
    trained = run_stages_in_processes(args) if args.workers > 1 else run_stages(args)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    model = trained.model
    # The wall time includes starting the other processes; the CPU time theirs.
    wall = time.perf_counter() - started
    cpu = (
        time.process_time()
        - cpu_started
        + children.ru_utime
        + children.ru_stime
        - children_started.ru_utime
        - children_started.ru_stime
    )
    record = {
        "model": "demo model trained on synthetic shapes (SAM3's classes at a small size), "
        "not SAM3",
        "architecture": arch.name,
        "trained": "stage 1: interactive segmentation (points, boxes, refinement with the "
        "previous logits); "
        + (
            "stage 2: concept segmentation (texts naming shapes and colours, box exemplars) "
            "with the ViT trunk frozen; "
            if trained.concept_steps
            else "the concept detector keeps its seeded random initialisation; "
        )
        + (
            "stage 3: the tracker's memory on clips of moving shapes (one click on the first "
            "frame), all that clicks and boxes read frozen"
            if trained.track_steps
            else "the tracker's memory keeps its seeded random initialisation"
        ),
        "seed": args.seed,
        "init": args.init or None,
        "steps": trained.steps,
        "steps_planned": args.steps,
        "batch": args.batch,
        "objects_per_scene": args.objects,
        "peak_lr": args.lr,
        "hint_fade": args.hint_fade,
        "concept_steps": trained.concept_steps,
        "concept_steps_planned": args.concept_steps,
        "concept_batch": args.concept_batch,
        "concept_queries_per_scene": args.concept_queries,
        "concept_peak_lr": args.concept_lr,
        "track_steps": trained.track_steps,
        "track_batch": args.track_batch,
        "track_phases": trained.track_phases,
        "threads": args.threads,
        "workers": args.workers,
        "stage1_wall_seconds": round(trained.stage1_wall, 1),
        "stage2_wall_seconds": round(trained.stage2_wall, 1),
        "stage3_wall_seconds": round(trained.stage3_wall, 1),
        "wall_seconds": round(wall, 1),
        "process_cpu_seconds": round(cpu, 1),
        "losses": trained.history,
        "concept_losses": trained.concept_history,
        "track_losses": trained.track_history,
    }
    if args.init and not args.steps:
        record = with_stage1(record, Path(args.init))
    model.eval()
    if args.out:
        path = Path(args.out)
        save_demo_checkpoint(model, path)
        record["checkpoint_bytes"] = path.stat().st_size
    tracked = EngineSettings(checkpoint=args.out, device="cpu") if args.out else None
    record.update(
        evaluate.held_out(model, tracked, args.eval_scenes, args.eval_clips, seed=args.seed)
    )
    if args.record:
        Path(args.record).write_text(json.dumps(record, indent=1) + "\n")
    return record


STAGE1_KEYS = (
    "steps",
    "steps_planned",
    "batch",
    "objects_per_scene",
    "peak_lr",
    "hint_fade",
    "losses",
    "note",
)


def with_stage1(record: dict, init: Path) -> dict:
    """A run of the later stages from stage 1's checkpoint (`--init`, `--steps 0`): stage 1's
    facts from the checkpoint's own record (`shapes.json` beside `shapes.pt`), so that one
    record describes the whole chain."""
    stage1 = record_beside(init)
    if not stage1:
        return record
    merged = {**record, **{key: stage1[key] for key in STAGE1_KEYS if key in stage1}}
    merged["stage1_threads"] = stage1.get("stage1_threads", stage1.get("threads"))
    merged["stage1_workers"] = stage1.get("stage1_workers", stage1.get("workers", 1))
    merged["stage1_wall_seconds"] = stage1.get("stage1_wall_seconds", stage1.get("wall_seconds"))
    merged["stage1_process_cpu_seconds"] = stage1.get(
        "stage1_process_cpu_seconds", stage1.get("process_cpu_seconds")
    )
    merged["later_stages_process_cpu_seconds"] = record["process_cpu_seconds"]
    merged["wall_seconds"] = round(record["wall_seconds"] + merged["stage1_wall_seconds"], 1)
    merged["process_cpu_seconds"] = round(
        record["process_cpu_seconds"] + merged["stage1_process_cpu_seconds"], 1
    )
    return merged


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7000)
    parser.add_argument("--batch", type=int, default=4, help="scenes per step")
    parser.add_argument("--objects", type=int, default=4, help="instances decoded per scene")
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=200, help="steps of linear warm-up")
    parser.add_argument(
        "--hint-fade", type=float, default=0.4, help="share of steps with round 0 hinted; 0: none"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="in all")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes training in parallel, sharing --threads"
    )
    parser.add_argument("--time-budget", type=float, default=0, help="stage 1 seconds; 0: none")
    parser.add_argument("--init", default="", help="start from this demo checkpoint")
    parser.add_argument("--concept-steps", type=int, default=0, help="stage 2; 0: none")
    parser.add_argument("--concept-batch", type=int, default=2, help="scenes per step")
    parser.add_argument("--concept-queries", type=int, default=4, help="queries per scene")
    parser.add_argument("--concept-lr", type=float, default=4e-4)
    parser.add_argument("--concept-time-budget", type=float, default=0, help="stage 2 seconds")
    parser.add_argument(
        "--track-steps", type=int, nargs="+", default=[0], help="stage 3, per phase; 0: none"
    )
    parser.add_argument("--track-batch", type=int, default=4, help="clips per step")
    parser.add_argument(
        "--track-frames", type=int, nargs="+", default=[8], help="frames per clip, per phase"
    )
    parser.add_argument(
        "--track-lr", type=float, nargs="+", default=[2e-3], help="peak lr, per phase"
    )
    parser.add_argument(
        "--track-teacher-steps",
        type=int,
        default=0,
        help="stage 3's first phase: steps over which the share taught from true memories "
        "falls from all to none (0: none)",
    )
    parser.add_argument(
        "--track-time-budget",
        type=float,
        default=0,
        help="stage 3 seconds, all phases; once spent, the phases left are not run (0: none)",
    )
    parser.add_argument("--eval-clips", type=int, default=0, help="held-out clips tracked")
    parser.add_argument("--out", default="", help="checkpoint path (shapes.pt)")
    parser.add_argument("--record", default="", help="training record path (shapes.json)")
    parser.add_argument("--eval-scenes", type=int, default=0, help="held-out scenes scored")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--save-every", type=int, default=500)
    args = parser.parse_args(argv)
    if not len(args.track_steps) == len(args.track_frames) == len(args.track_lr):
        parser.error("--track-steps, --track-frames and --track-lr: one value per phase each")
    shared = {"--batch": args.batch, "--concept-batch": args.concept_batch}
    shared["--track-batch"] = args.track_batch
    for name, count in shared.items():
        if args.workers < 1 or count % args.workers:
            parser.error(f"{name} ({count}) is shared by --workers ({args.workers}): a multiple")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    return train(args)


if __name__ == "__main__":
    main()
