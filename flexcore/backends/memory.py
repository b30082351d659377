"""Memory planning for the executor: one arena, offsets reused by values whose lifetimes do not meet.

A value is live over an inclusive range of instruction indices: from the first instruction that
touches it (its producer) to the last one (its last reader); a view (ALIAS) extends the lifetime of
the buffer under it, which is why liveness is computed on root buffers.  Offsets come from a
best-fit interval allocator: values are placed in order of their first instruction, each into the
smallest free gap between the values still alive at that point (or on top of them).
"""

from __future__ import annotations

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
    into a gap between the values still alive at i (their `end` >= i)."""
    order = sorted(intervals, key=lambda iv: (iv.start, -iv.size, iv.key))
    active: list[tuple[int, int, int]] = []  # (offset, padded size, end), sorted by offset
    offsets: dict[int, int] = {}
    arena = 0
    for iv in order:
        active = [a for a in active if a[2] >= iv.start]
        size = align_up(iv.size, align)
        best, best_gap = None, None
        cursor = 0
        for off, sz, _ in active:
            gap = off - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, off + sz)
        offset = best if best is not None else cursor
        offsets[iv.key] = offset
        if size:
            active.append((offset, size, iv.end))
            active.sort()
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
