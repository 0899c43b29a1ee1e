"""The replicas' mailboxes (`deployments/peers.py`'s `HandoffBoard`), as a plain object on one
event loop: messages in order, a long poll that wakes on a post, forgotten addressees, and
which replicas read the board."""

from __future__ import annotations

import asyncio
import time

from deployments.peers import HandoffBoard


def test_messages_arrive_in_order_and_a_waiting_reader_wakes():
    async def scenario() -> None:
        board = HandoffBoard()
        await board.post("a", ("note", "b", "", 1))
        await board.post("a", ("note", "b", "", 2))
        assert await board.take("a", 0.01) == [("note", "b", "", 1), ("note", "b", "", 2)]
        waiting = asyncio.ensure_future(board.take("a", 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = time.monotonic()
        await board.post("a", ("call", "c", "r1", 3))
        assert await waiting == [("call", "c", "r1", 3)]
        assert time.monotonic() - started < 1.0
        assert await board.take("a", 0.01) == []

    asyncio.run(scenario())


def test_messages_for_a_replica_that_never_reads_expire():
    async def scenario() -> None:
        board = HandoffBoard(ttl_s=0.05)
        await board.post("gone", ("note", "b", "", 1))
        await asyncio.sleep(0.1)
        await board.post("other", ("note", "b", "", 2))  # posting sweeps expired messages
        assert await board.take("gone", 0.01) == []
        assert await board.take("other", 0.01) == [("note", "b", "", 2)]

    asyncio.run(scenario())


def test_the_board_knows_the_replicas_that_read_it():
    """A replica of another code version reads another board: not one to wait for."""

    async def scenario() -> None:
        board = HandoffBoard(ttl_s=0.2)
        await board.take("reader", 0.0)
        assert await board.knows("reader")
        assert not await board.knows("elsewhere")
        await asyncio.sleep(0.3)
        assert not await board.knows("reader")  # stopped reading: gone

    asyncio.run(scenario())
