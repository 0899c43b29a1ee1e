"""A history of client requests to one service, and the check every answer must pass: the
deterministic simulation (`tests/unit/handoff_simulation.py`) and the live churn test on
Ray (`tests/integration/test_churn.py`) record their requests as `Op`s and check them with
the same `Checker`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Op:
    """One client request in the history."""

    image_id: str
    sent: float
    write: str | None  # the digest of the bytes it sent (a write), or None: a click by id
    acked: float | None = None
    answer: str | None = None
    outcome: str = "pending"
    holders: list[str] = field(default_factory=list)  # live replicas holding it when sent


@dataclass
class Checker:
    """The history of client requests. `stale(op)`: an answer must never come from a picture
    older than one acknowledged before the request was sent, unless a write sent after
    that one (concurrent with it, or never acknowledged) gave it."""

    lossy: bool
    ops: list[Op] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def stale(self, op: Op) -> str | None:
        """Whether `op`'s answer is older than a write acknowledged before it was sent."""
        for done in self.ops:
            if done.write is None or done.acked is None or done.acked >= op.sent:
                continue
            if done.write == op.answer or done.image_id != op.image_id:
                continue
            # `done` was acknowledged before `op` was sent, with other content: `op`'s
            # answer must come from a write not known to precede `done`.
            givers = [
                w
                for w in self.ops
                if w.image_id == op.image_id and w.write == op.answer and w.sent < op.acked  # type: ignore[operator]
            ]
            if all(w.acked is not None and w.acked < done.sent for w in givers):
                return (
                    f"{op.image_id}: answered {op.answer[:6]} at {op.acked:.3f}, but "  # type: ignore[index]
                    f"{done.write[:6]} was acknowledged at {done.acked:.3f}"
                )
        return None
