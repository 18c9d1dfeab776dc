"""Which units of the channel groups to remove: by weight importance, or because they are dead."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from worker.channels.state import Analysis, Group


def importance(
    analysis: Analysis, kind: Literal["l1", "l2", "random"], seed: int = 0
) -> dict[int, float]:
    """Score of every unit (root channel id): the norm of its producer weight slices, summed
    over the producers (depthwise convolutions on the way included)."""
    channels = analysis.channels
    scores: dict[int, float] = {}
    if kind == "random":
        rng = np.random.default_rng(seed)
        units = sorted({int(u) for g in analysis.groups for u in g.units})
        return dict(zip(units, rng.random(len(units)).tolist(), strict=True))
    for use in analysis.slices:
        if use.role != "producer":
            continue
        name = analysis.model.graph.node[use.node].input[use.input]
        weight = np.moveaxis(analysis.constants[name], use.axis, 0).astype(np.float64)
        flat = weight.reshape(weight.shape[0], -1)
        norms = np.abs(flat).sum(1) if kind == "l1" else np.sqrt((flat**2).sum(1))
        for channel, norm in zip(use.ids, norms, strict=True):
            root = channels.find(int(channel))
            scores[root] = scores.get(root, 0.0) + float(norm)
    return scores


def kept_count(count: int, ratio: float, round_to: int, width: int = 1) -> int:
    """Units a group keeps: `ratio` of them removed (rounded down), then rounded up so that the
    kept channels (units x `width` channels each) are a multiple of `round_to`, when the group
    has more units than that takes (heads of 64 channels need no rounding for 8)."""
    kept = count - math.floor(ratio * count + 1e-9)
    step = round_to // math.gcd(round_to, width)
    if step > 1 and count > step:
        kept = min(count, math.ceil(kept / step) * step)
    return max(1, kept)


def by_ratio(
    analysis: Analysis,
    scores: dict[int, float],
    ratio: float,
    round_to: int,
    scope: Literal["layer", "global"],
) -> set[int]:
    """The lowest-scoring units: `ratio` of each group (`layer`), or of all groups together
    with scores normalized by their group's mean (`global`)."""
    groups = [g for g in analysis.groups if g.prunable and len(g.units) > 1]
    targets = {
        id(g): len(g.units) - kept_count(len(g.units), ratio, round_to, g.width) for g in groups
    }
    if scope == "global":
        targets = _global_targets(groups, scores, ratio, round_to)
    removed: set[int] = set()
    for group in groups:
        removed.update(_lowest(group, scores, targets[id(group)]))
    return keep_every_tensor(analysis, removed, scores)


def _global_targets(
    groups: list[Group], scores: dict[int, float], ratio: float, round_to: int
) -> dict[int, int]:
    ranked: list[tuple[float, int]] = []
    for group in groups:
        values = np.array([scores.get(int(u), 0.0) for u in group.units])
        mean = float(values.mean()) or 1.0
        ranked.extend((float(v) / mean, id(group)) for v in values)
    ranked.sort(key=lambda pair: pair[0])
    wanted: dict[int, int] = dict.fromkeys((id(g) for g in groups), 0)
    for _, key in ranked[: math.floor(ratio * len(ranked) + 1e-9)]:
        wanted[key] += 1
    targets = {}
    for group in groups:
        count = len(group.units)
        share = min(wanted[id(group)], count - 1) / count
        targets[id(group)] = count - kept_count(count, share, round_to, group.width)
    return targets


def _lowest(group: Group, scores: dict[int, float], count: int) -> list[int]:
    if count <= 0:
        return []
    values = np.array([scores.get(int(u), 0.0) for u in group.units])
    order = np.argsort(values, kind="stable")
    return [int(group.units[i]) for i in order[:count]]


def dead_units(
    analysis: Analysis,
    activity: dict[int, float],
    threshold: float,
    max_ratio: float,
    round_to: int,
) -> set[int]:
    """Units whose mean absolute activation at every consumer input is at most `threshold`
    times their group's mean; at most `max_ratio` of a group, and the kept count rounded up to
    a multiple of `round_to` by keeping the most active of the dead ones."""
    removed: set[int] = set()
    for group in analysis.groups:
        count = len(group.units)
        if not group.prunable or count < 2:
            continue
        values = np.array([activity.get(int(u), math.inf) for u in group.units])
        finite = values[np.isfinite(values)]
        level = threshold * (float(finite.mean()) if finite.size else 0.0)
        dead = [i for i in np.argsort(values, kind="stable") if values[i] <= level]
        limit = min(len(dead), math.floor(max_ratio * count + 1e-9), count - 1)
        kept = kept_count(count, limit / count, round_to, group.width)
        removed.update(int(group.units[i]) for i in dead[: count - kept])
    return keep_every_tensor(analysis, removed, activity)


def keep_every_tensor(analysis: Analysis, removed: set[int], scores: dict[int, float]) -> set[int]:
    """Give back the best unit of any tensor that would lose all its channels (a branch of a
    concatenation whose sum is pruned elsewhere): a tensor with zero channels is not valid."""
    arrays = [u.ids for u in analysis.slices] + [u.ids for u in analysis.values]
    arrays += [u.ids for u in analysis.attrs] + [r.ids for r in analysis.readers]
    removed = set(removed)
    changed = True
    while changed:
        changed = False
        for ids in arrays:
            roots = {analysis.channels.find(int(i)) for i in ids}
            if roots and roots <= removed:
                best = max(roots, key=lambda r: (scores.get(r, 0.0), -r))
                removed.discard(best)
                changed = True
    return removed
