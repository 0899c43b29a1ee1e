"""`sam3_core.demo.parallel`: processes training the demo model together apply the mean of
their gradients and keep equal weights, in real processes (spawned, gloo); and that mean is
the gradient one process would apply to their clips together."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from sam3_core.demo import parallel, tracking, train
from sam3_core.demo.scenes import resized_mask
from sam3_core.demo.weights import build_untrained
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

WORKERS = 2


def _in_processes(target, *args) -> list:
    """Run `target(rank, *args)` in WORKERS spawned processes joined as one group; what each
    returned, by rank."""
    context = torch.multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        results = context.SimpleQueue()
        processes = [
            context.Process(target=_member, args=(folder, rank, results, target, args))
            for rank in range(WORKERS)
        ]
        for process in processes:
            process.start()
        answers = dict(results.get() for _ in processes)
        for process in processes:
            process.join(timeout=600)
        assert [p.exitcode for p in processes] == [0] * WORKERS
    return [answers[rank] for rank in range(WORKERS)]


def _member(folder: str, rank: int, results, target, args) -> None:
    torch.set_num_threads(1)
    parallel.join(str(Path(folder) / "rendezvous"), rank, WORKERS)
    try:
        results.put((rank, target(rank, *args)))
    finally:
        parallel.leave()


def _gradients(rank: int) -> dict:
    """Each process gives `both` a gradient of rank + 1, `first` one only in process 0, and
    `neither` none."""
    both, first, neither = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    (both * (rank + 1)).sum().backward()
    if rank == 0:
        (first * 4).sum().backward()
    parallel.mean_gradients([both, first, neither])
    return {
        "workers": parallel.workers(),
        "both": both.grad.tolist(),
        "first": first.grad.tolist(),
        "neither": neither.grad,
        "metrics": parallel.mean_metrics({"loss": float(rank), "iou": 2.0 * rank}),
        "stop": parallel.any_process(rank == 1),
    }


def _train_steps(rank: int, steps: int) -> tuple[np.ndarray, float]:
    """A few stage-1 steps on this process's own scenes: every process's weights (gathered)
    and this one's first loss."""
    model = build_untrained(seed=0, concepts=False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    rng = np.random.default_rng([0, rank])
    losses = [train.train_step(model, optimizer, rng, 1, 2, 2)["loss"] for _ in range(steps)]
    weights = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    gathered = [torch.empty_like(weights) for _ in range(parallel.workers())]
    dist.all_gather(gathered, weights)
    return torch.stack(gathered).numpy(), losses[0]


def _both(rank: int) -> tuple[dict, tuple[np.ndarray, float]]:
    return _gradients(rank), _train_steps(rank, 3)


@pytest.fixture(scope="module")
def answers() -> list[tuple[dict, tuple[np.ndarray, float]]]:
    """Both checks in one group of processes (starting one costs ~10 s)."""
    return _in_processes(_both)


def test_gradients_and_logged_values_are_averaged_over_the_processes(answers):
    for answer, _ in answers:
        assert answer["workers"] == WORKERS
        assert answer["both"] == [1.5] * 3  # (1 + 2) / 2
        assert answer["first"] == [2.0] * 3  # (4 + 0) / 2: a missing gradient counts zero
        assert answer["neither"] is None  # none given anywhere: AdamW leaves it alone
        assert answer["metrics"] == {"loss": 0.5, "iou": 1.0}
        assert answer["stop"] is True


def test_processes_on_different_scenes_keep_equal_weights(answers):
    (_, (weights, first_loss)), (_, (others, other_loss)) = answers
    assert first_loss != other_loss  # each process drew its own scenes
    assert np.array_equal(weights[0], weights[1]) and np.array_equal(weights, others)
    start = torch.nn.utils.parameters_to_vector(build_untrained(0, concepts=False).parameters())
    assert not np.array_equal(weights[0], start.detach().numpy())


def test_a_run_in_two_processes_trains_every_stage_and_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "shapes.pt"
    record = train.main(
        [
            *("--workers", "2", "--steps", "2", "--batch", "2", "--log-every", "1"),
            *("--concept-steps", "1", "--concept-batch", "2", "--concept-queries", "2"),
            *("--track-steps", "1", "--track-batch", "2", "--track-frames", "3"),
            *("--out", str(out)),
        ]
    )
    assert record["workers"] == 2 and record["threads"] == 2
    assert [entry["step"] for entry in record["losses"]] == [1, 2]
    assert all(np.isfinite(entry["loss"]) for entry in record["losses"])
    assert record["concept_steps"] == 1 and record["track_steps"] == 1
    trained = load_model(EngineSettings(checkpoint=str(out), device="cpu", concepts=False))
    untrained = build_untrained(seed=0, concepts=False).state_dict()
    assert any(
        not torch.equal(v.float(), untrained[k].float().half().float())
        for k, v in trained.state_dict().items()
        if k.startswith("image_encoder.trunk.")
    )


def test_a_batch_that_the_processes_cannot_share_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["--workers", "2", "--batch", "3", "--steps", "0"])
    assert exit_.value.code == 2
    assert "--batch (3) is shared by --workers (2)" in capsys.readouterr().err


class _Recorder:
    """An optimiser that keeps the gradient it is given instead of stepping."""

    def __init__(self, parameters: list[torch.nn.Parameter]) -> None:
        self.param_groups = [{"params": parameters}]
        self.gradients: list[torch.Tensor | None] = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.param_groups[0]["params"]:
            parameter.grad = None

    def step(self) -> None:
        self.gradients = [
            None if p.grad is None else p.grad.clone() for p in self.param_groups[0]["params"]
        ]


def test_a_tracking_step_on_four_clips_is_the_mean_of_two_steps_on_two(monkeypatch):
    """What two processes of two clips each apply (`parallel.mean_gradients`) is what one
    process of four would: the clips of a batch do not see each other in `track_step`, and
    the losses are means over the clips."""
    model = load_model(EngineSettings(checkpoint="demo:shapes", device="cpu", concepts=False))
    parameters = tracking.training_mode(model)
    clips = tracking.clip_batch(np.random.default_rng(5), 4, 3)
    # The clipping (to a norm of 0.1) comes after the mean in processes: compare before it.
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *args, **kwargs: None)

    def step(chosen: list) -> tuple[list, dict]:
        monkeypatch.setattr(tracking, "clip_batch", lambda rng, batch, frames: chosen)
        recorder = _Recorder(parameters)
        logged = tracking.tracking_step(model, recorder, np.random.default_rng(0), len(chosen), 3)
        return recorder.gradients, logged

    whole, logged = step(clips)
    (first, first_logged), (second, second_logged) = step(clips[:2]), step(clips[2:])
    assert logged["track_loss"] == pytest.approx(
        (first_logged["track_loss"] + second_logged["track_loss"]) / 2, rel=1e-5
    )
    given = [(w, a, b) for w, a, b in zip(whole, first, second, strict=True) if w is not None]
    assert given and sum(float(w.norm()) for w, _, _ in given) > 0
    for w, a, b in given:  # the same sums in other orders: equal within float32 rounding
        assert float((w - (a + b) / 2).norm()) <= 1e-3 * float(w.norm())


@pytest.mark.parametrize("teacher", [0.0, 1.0])
def test_a_taught_step_makes_the_tracked_frames_memories_from_their_true_masks(
    monkeypatch, teacher
):
    """`--track-teacher-steps`: a taught step encodes each tracked frame's memory from that
    frame's true mask of the tracked shape (and its presence), an untaught one from the
    tracker's own mask; the clicked frame's memory is the click's mask in both."""
    model = load_model(EngineSettings(checkpoint="demo:shapes", device="cpu", concepts=False))
    tracker = model.predictor.model
    clips = tracking.clip_batch(np.random.default_rng(5), 2, 3)
    monkeypatch.setattr(tracking, "clip_batch", lambda rng, batch, frames: clips)
    encoded: list[tuple[torch.Tensor, torch.Tensor]] = []
    encode = tracker._encode_new_memory

    def spy(**kwargs):
        encoded.append((kwargs["pred_masks_high_res"], kwargs["object_score_logits"]))
        return encode(**kwargs)

    monkeypatch.setattr(tracker, "_encode_new_memory", spy)
    optimizer = _Recorder(tracking.training_mode(model))
    logged = tracking.tracking_step(model, optimizer, np.random.default_rng(0), 2, 3, teacher)
    assert np.isfinite(logged["track_loss"]) and len(encoded) == 3  # one memory a frame
    side = tracker.image_size
    for t, (masks, scores) in enumerate(encoded):
        given = torch.all(masks.abs() == tracking.TRUE_LOGIT) and torch.all(
            scores.abs() == tracking.TRUE_LOGIT
        )
        assert bool(given) == bool(teacher and t)
        if given:
            truth = np.stack([resized_mask(clip.masks[index, t], side) for clip, index in clips])
            assert ((masks[:, 0] > 0).numpy() == truth).mean() > 0.99
