"""Memory planning for the executor: one arena, offsets reused by values whose lifetimes do not meet.

A value is live over an inclusive range of instruction indices: from the first instruction that
touches it (its producer) to the last one (its last reader); a view (ALIAS) extends the lifetime of
the buffer under it, which is why liveness is computed on root buffers.  Offsets come from a
best-fit interval allocator: values are placed in order of their first instruction, each into the
smallest free gap between the values still alive at that point (or on top of them).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ALIGN = 64  # arena offsets; every kernel's vector loads are then aligned, as numpy's would be


def align_up(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


@dataclass(frozen=True)
class Interval:
    """A value that needs `size` bytes of the arena from instruction `start` to `end` (inclusive)."""

    key: int
    size: int
    start: int
    end: int


def plan_offsets(intervals: Sequence[Interval], align: int = ALIGN) -> tuple[dict[int, int], int]:
    """Offsets (key -> byte offset, multiples of `align`) and the arena size.

    Values alive at the same instruction never overlap: a value placed at instruction i only goes
    into a gap between the values still alive at i (their `end` >= i).

    The free gaps below the top of the live values are kept sorted by (size, offset), so placing a
    value costs a bisection rather than a scan of everything alive: a training step keeps every
    forward activation alive until its backward, and a scan made planning quadratic in T."""
    order = sorted(intervals, key=lambda iv: (iv.start, -iv.size, iv.key))
    expiry: list[tuple[int, int, int]] = []  # heap of (end, offset, padded size) of live values
    by_size: list[tuple[int, int]] = []  # free gaps as (size, offset), sorted
    gap_at: dict[int, int] = {}  # free gap offset -> size
    gap_ending: dict[int, int] = {}  # free gap end -> offset
    top = 0  # end of the highest live value
    offsets: dict[int, int] = {}
    arena = 0

    def drop_gap(off: int) -> int:
        sz = gap_at.pop(off)
        del gap_ending[off + sz]
        del by_size[bisect.bisect_left(by_size, (sz, off))]
        return sz

    def add_gap(off: int, sz: int) -> None:
        gap_at[off] = sz
        gap_ending[off + sz] = off
        bisect.insort(by_size, (sz, off))

    for iv in order:
        while expiry and expiry[0][0] < iv.start:
            _, off, sz = heapq.heappop(expiry)
            end = off + sz
            if off in gap_ending:  # merge with the free gap just below
                below = gap_ending[off]
                drop_gap(below)
                off = below
            if end in gap_at:  # and the one just above
                end += drop_gap(end)
            if end == top:
                top = off
            else:
                add_gap(off, end - off)
        size = align_up(iv.size, align)
        if not size:
            offsets[iv.key] = 0
            continue
        i = bisect.bisect_left(by_size, (size, -1))
        if i < len(by_size):
            gap, offset = by_size[i]
            drop_gap(offset)
            if gap > size:
                add_gap(offset + size, gap - size)
        else:
            offset = top
            top += size
        offsets[iv.key] = offset
        heapq.heappush(expiry, (iv.end, offset, size))
        arena = max(arena, offset + iv.size)
    return offsets, arena


def overlaps(intervals: Iterable[Interval], offsets: dict[int, int]) -> list[tuple[int, int]]:
    """Pairs of keys that are alive at the same instruction and share arena bytes (the planner's
    invariant is that there are none).  Brute force on purpose: it checks the clever code."""
    ivs = [iv for iv in intervals if iv.size > 0]
    bad = []
    for i, a in enumerate(ivs):
        for b in ivs[i + 1 :]:
            if a.start <= b.end and b.start <= a.end:
                oa, ob = offsets[a.key], offsets[b.key]
                if oa < ob + b.size and ob < oa + a.size:
                    bad.append((a.key, b.key))
    return bad
