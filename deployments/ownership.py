"""Who may answer for a key, on one replica: the ownership state machine of the hand-off
(`deployments.handoff`), kept apart from the transport (`deployments.peers`) and from what a
key's value is (an image's picture today; a video session can use the same machine).

A key on a replica is in one of these states (the ring, `deployments.ring`, says who owns it):

- **owned**: held here as its owner, lent to nobody. No entry: the common case costs nothing.
- **lent**: owned, and copies were lent to `borrowers` (helpers under bounded load). Before
  the owner answers a request that gave the key new content, or sends the key away, or
  finds it evicted, every borrower is told to forget (`changed`, `sending`, `sweep`).
- **borrowed**: a helper's copy of the owner's value, fetched from `peer`. Never lent on.
- **receiving**: `senders` (earlier owners, or a replica it reached by mistake) announced
  they are sending the key here; `peer` is the latest of them; `version`, the newest value
  announced (0: unknown). A value held here older than that is not answered from.
- **sending**: on its way to `peer`, its new owner; forgotten here once sent.
- **forgotten**: dropped because the owner has a newer version: a copy older than `version`
  still on its way is refused, for `ttl_s`.

Versions are a logical clock (`Clock`, Lamport's): each replica stamps the values it accepts
from clients with `tick()` and every hand-off message carries the sender's clock, which the
receiver `observe`s. A value that reached a replica through the hand-off of another is thus
older than anything the receiver accepts afterwards; wall clocks of two nodes never decide.

Invariants (`check`, run by the simulation after every step):
1. a borrowed key has a lender other than this replica, and no borrowers;
2. a lent key has at least one borrower, never this replica;
3. a receiving or sending key names a peer other than this replica (receiving: among its
   senders, none of them this replica);
4. at most `max_forgotten` forgotten keys (and none older than `ttl_s` after a `sweep`);
5. after a `sweep` (at every ring change, loan and borrow), borrowed and lent keys are
   held here, so bookkeeping is bounded by the cache; receiving and sending ones end when
   the key arrives or leaves, its sender says "settled", a request gives up waiting, or
   `ttl_s` after it was announced (`quiet`: none left once hand-offs are done);
6. the clock never goes back.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

# Forgotten keys remembered at most (each a few dozen bytes).
MAX_FORGOTTEN = 4096


class Role(enum.Enum):
    OWNED = "owned"
    LENT = "lent"
    BORROWED = "borrowed"
    RECEIVING = "receiving"
    SENDING = "sending"
    FORGOTTEN = "forgotten"


class InvariantError(AssertionError):
    """The ownership bookkeeping broke one of its invariants (a bug, never a client's)."""


class Clock:
    """A Lamport clock, thread-safe (engines stamp values from worker threads)."""

    def __init__(self) -> None:
        self._now = 0
        self._lock = threading.Lock()

    @property
    def now(self) -> int:
        return self._now

    def tick(self) -> int:
        """A version later than every one this replica has stamped or observed."""
        with self._lock:
            self._now += 1
            return self._now

    def observe(self, version: int) -> None:
        """A message carried `version`: what is stamped from now on is later."""
        with self._lock:
            self._now = max(self._now, int(version))


@dataclass
class _Entry:
    role: Role
    peer: str | None = None
    borrowers: set[str] = field(default_factory=set)
    version: int = 0
    since: float = 0.0
    # receiving: every replica that announced the key (it may come from any of them).
    senders: set[str] = field(default_factory=set)
    # lent: the pictures (content digests) lent since the key last changed.
    lent: set[str] = field(default_factory=set)


class Ownership:
    """The states of the keys of one replica `me` (see the module's docstring). Not
    thread-safe: called from the replica's event loop only (the clock is the exception)."""

    def __init__(self, me: str, ttl_s: float, max_forgotten: int = MAX_FORGOTTEN) -> None:
        self.me = me
        self.ttl_s = ttl_s
        self.max_forgotten = max_forgotten
        self.clock = Clock()
        self._entries: dict[Hashable, _Entry] = {}
        self._last_clock = 0

    # Queries -------------------------------------------------------------------------------

    def role(self, key: Hashable) -> Role | None:
        """The key's state, or None when it has no entry (owned if held, else unknown)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.role

    def peer(self, key: Hashable) -> str | None:
        """The lender (borrowed), sender (receiving) or target (sending) of `key`."""
        entry = self._entries.get(key)
        return None if entry is None else entry.peer

    def senders(self, key: Hashable) -> frozenset[str]:
        """The replicas that announced `key` and have not said it will not come (receiving);
        `peer` is the latest of them."""
        entry = self._entries.get(key)
        if entry is None or entry.role is not Role.RECEIVING:
            return frozenset()
        return frozenset(entry.senders)

    def borrowers(self, key: Hashable) -> frozenset[str]:
        entry = self._entries.get(key)
        return frozenset() if entry is None else frozenset(entry.borrowers)

    def keys(self, role: Role) -> list[Hashable]:
        return [key for key, entry in self._entries.items() if entry.role is role]

    def awaits_newer(self, key: Hashable, held_version: int) -> bool:
        """Whether a value of `key` newer than the one held here (at `held_version`) was
        announced: requests wait for it instead of answering from the older one."""
        entry = self._entries.get(key)
        return entry is not None and entry.role is Role.RECEIVING and entry.version > held_version

    def refuses(self, key: Hashable, version: int) -> bool:
        """Whether a copy of `key` at `version` is older than one the owner said to forget."""
        entry = self._entries.get(key)
        return entry is not None and entry.role is Role.FORGOTTEN and version < entry.version

    def __len__(self) -> int:
        return len(self._entries)

    # Transitions ---------------------------------------------------------------------------

    def lend(self, key: Hashable, borrower: str, digest: str | None = None) -> None:
        """owned/lent -> lent: `borrower` fetched a copy (of the picture `digest`)."""
        if borrower == self.me:
            raise InvariantError(f"{self.me} lends {key!r} to itself")
        entry = self._entries.get(key)
        if entry is None or entry.role is Role.FORGOTTEN:
            entry = self._entries[key] = _Entry(Role.LENT)
        elif entry.role is Role.BORROWED:
            raise InvariantError(f"{self.me} lends its borrowed copy of {key!r}")
        entry.borrowers.add(borrower)
        if digest is not None:
            entry.lent.add(digest)
        if entry.role is Role.OWNED:
            entry.role = Role.LENT

    def lent_other_than(self, key: Hashable, digest: str) -> bool:
        """Whether a picture other than `digest` was lent since the key last changed (two
        writes ran at once, and the one that ended last found the content it started on)."""
        entry = self._entries.get(key)
        return entry is not None and bool(entry.borrowers) and bool(entry.lent - {digest})

    def borrow(self, key: Hashable, lender: str, version: int) -> bool:
        """-> borrowed: a copy of `lender`'s value at `version` arrived. False (nothing
        changes) when the owner has said to forget it, or the key is held here otherwise."""
        self.clock.observe(version)
        entry = self._entries.get(key)
        if entry is not None and (entry.role is not Role.FORGOTTEN or version < entry.version):
            return False
        self._entries[key] = _Entry(Role.BORROWED, peer=lender, version=version)
        return True

    def take_over(self, key: Hashable) -> None:
        """borrowed -> owned: the ring made this replica the owner of a copy it holds."""
        entry = self._entries.get(key)
        if entry is not None and entry.role is Role.BORROWED:
            del self._entries[key]

    def unborrow(self, key: Hashable) -> None:
        """borrowed -> (none): the copy is dropped."""
        entry = self._entries.get(key)
        if entry is not None and entry.role is Role.BORROWED:
            del self._entries[key]

    def changed(self, key: Hashable) -> frozenset[str]:
        """lent -> owned: the key got new content here; returns who must forget their copy
        (before the request that gave it is answered)."""
        entry = self._entries.get(key)
        if entry is None or not entry.borrowers:
            return frozenset()
        borrowers = frozenset(entry.borrowers)
        entry.borrowers.clear()
        entry.lent.clear()
        if entry.role is Role.LENT:
            del self._entries[key]
        return borrowers

    def forget(self, key: Hashable, version: int, now: float) -> bool:
        """-> forgotten: the owner holds `version`, newer than any copy lent before it.
        Returns whether this replica held a borrowed copy (to drop). A copy that became
        this replica's own (`take_over`) is the caller's to compare with `version`; one
        still receiving (a copy taken over whose lender has not sent its picture yet) waits
        for a value at least that new (`awaits_newer`)."""
        self.clock.observe(version)
        entry = self._entries.get(key)
        if entry is not None and entry.role is Role.RECEIVING:
            entry.version = max(entry.version, version)
            return False
        if entry is not None and entry.role in (Role.LENT, Role.SENDING):
            return False  # owner here (or about to be): its own versions decide
        borrowed = entry is not None and entry.role is Role.BORROWED
        previous = entry.version if entry is not None and entry.role is Role.FORGOTTEN else 0
        self._entries[key] = _Entry(Role.FORGOTTEN, version=max(previous, version), since=now)
        self._bound_forgotten()
        return borrowed

    def announce(
        self, key: Hashable, sender: str, version: int = 0, now: float | None = None
    ) -> None:
        """-> receiving: `sender` will send `key` here (its value at `version`, if known).
        With `now`, a `sweep` ends the wait `ttl_s` after the latest announcement (a sender
        that stopped without saying "settled" leaves nothing behind)."""
        if sender == self.me:
            raise InvariantError(f"{self.me} announces {key!r} to itself")
        entry = self._entries.get(key)
        if entry is None or entry.role in (Role.FORGOTTEN, Role.BORROWED):
            entry = self._entries[key] = _Entry(Role.RECEIVING)
        elif entry.role is Role.LENT:
            entry.role = Role.RECEIVING
        elif entry.role is not Role.RECEIVING:
            return
        entry.peer = sender
        entry.senders.add(sender)
        entry.version = max(entry.version, version)
        if now is not None:
            entry.since = now

    def received(self, key: Hashable, sender: str | None = None) -> None:
        """receiving -> owned/lent: the key arrived, or will come from none of its senders
        (`sender`: this one says it will not come; the key may still come from another)."""
        entry = self._entries.get(key)
        if entry is None or entry.role is not Role.RECEIVING:
            return
        if sender is not None:
            entry.senders.discard(sender)
            if entry.senders:
                if entry.peer == sender:
                    entry.peer = sorted(entry.senders)[0]
                return
        if entry.borrowers:
            entry.role, entry.peer, entry.version, entry.since = Role.LENT, None, 0, 0.0
            entry.senders.clear()
        else:
            del self._entries[key]

    def stop_receiving(self, sender: str) -> list[Hashable]:
        """Every key `sender` announced: it is gone, nothing more comes from it."""
        keys = [k for k in self.keys(Role.RECEIVING) if sender in self._entries[k].senders]
        for key in keys:
            self.received(key, sender)
        return keys

    def sending(self, key: Hashable, target: str) -> frozenset[str]:
        """owned/lent -> sending: returns the borrowers, to tell to forget first (the new
        owner will not know them)."""
        if target == self.me:
            raise InvariantError(f"{self.me} sends {key!r} to itself")
        entry = self._entries.get(key)
        borrowers = frozenset() if entry is None else frozenset(entry.borrowers)
        self._entries[key] = _Entry(Role.SENDING, peer=target)
        return borrowers

    def sent(self, key: Hashable) -> None:
        """sending -> (none): delivered or not, the key is no longer held here."""
        entry = self._entries.get(key)
        if entry is not None and entry.role is Role.SENDING:
            del self._entries[key]

    def sweep(self, held: Callable[[Hashable], bool], now: float) -> dict[str, list[Hashable]]:
        """Drop what no longer stands: expired forgotten keys, borrowed copies evicted here,
        and lent keys evicted here, whose borrowers (returned: borrower -> keys) must forget
        their copies, since new content could reach this owner without it knowing them."""
        orphans: dict[str, list[Hashable]] = {}
        for key, entry in list(self._entries.items()):
            expired = entry.role is Role.FORGOTTEN and now - entry.since >= self.ttl_s
            if expired or (entry.role is Role.BORROWED and not held(key)):
                del self._entries[key]
            elif entry.role is Role.RECEIVING and entry.since and now - entry.since >= self.ttl_s:
                self.received(key)
            elif entry.role is Role.LENT and not held(key):
                for borrower in sorted(entry.borrowers):
                    orphans.setdefault(borrower, []).append(key)
                del self._entries[key]
        return orphans

    def _bound_forgotten(self) -> None:
        forgotten = [k for k, e in self._entries.items() if e.role is Role.FORGOTTEN]
        for key in forgotten[: max(0, len(forgotten) - self.max_forgotten)]:
            del self._entries[key]  # oldest first: dicts keep insertion order

    def quiet(self) -> None:
        """Raise `InvariantError` if keys are still receiving or sending: to call once every
        hand-off is over (the simulation's end)."""
        busy = self.keys(Role.RECEIVING) + self.keys(Role.SENDING)
        if busy:
            raise InvariantError(f"{self.me}: still moving {busy!r}")

    # Invariants ----------------------------------------------------------------------------

    def check(self, held: Iterable[Hashable], swept: bool = False) -> None:
        """Raise `InvariantError` if an invariant of the module's docstring is broken.
        `held`: the keys held here; `swept`: right after a `sweep` (the cache evicts
        without telling: borrowed and lent keys it evicted are dropped by the next one)."""
        held = set(held)
        forgotten = 0
        for key, entry in self._entries.items():
            role = entry.role
            if role is Role.BORROWED and (entry.peer in (None, self.me) or entry.borrowers):
                raise InvariantError(f"{self.me}: borrowed {key!r} from {entry.peer}, lent on")
            if role is Role.LENT and (not entry.borrowers or self.me in entry.borrowers):
                raise InvariantError(f"{self.me}: lent {key!r} to {entry.borrowers}")
            if role in (Role.RECEIVING, Role.SENDING) and entry.peer in (None, self.me):
                raise InvariantError(f"{self.me}: {role.value} {key!r} with {entry.peer}")
            if role is Role.RECEIVING and (
                self.me in entry.senders or entry.peer not in entry.senders
            ):
                raise InvariantError(f"{self.me}: receiving {key!r} from {entry.senders}")
            if role is Role.FORGOTTEN:
                forgotten += 1
            elif swept and role in (Role.BORROWED, Role.LENT) and key not in held:
                raise InvariantError(f"{self.me}: {role.value} {key!r} is not held")
        if forgotten > self.max_forgotten:
            raise InvariantError(f"{self.me}: {forgotten} forgotten keys")
        if self.clock.now < self._last_clock:
            raise InvariantError(f"{self.me}: clock went back")
        self._last_clock = self.clock.now
