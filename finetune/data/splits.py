"""Index splits shared by the data set loaders: stratified, group-disjoint (artist, performer, piece) and k-fold.

Every function returns lists of row indices, is deterministic for a given ``seed``, and checks its arguments. Groups
(artists, performers, pieces) never straddle two parts of a group split. A data set too small for the split asked
for raises :class:`~finetune.data.lazy.DataError` saying how many clips each class needs (scikit-learn's own
messages only name the first count that failed).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold, train_test_split

from .lazy import DataError

__all__ = [
    "SPLIT_ALIASES",
    "check_disjoint",
    "holdout_kfold",
    "kfold",
    "min_clips_per_class",
    "split_indices",
]

# folder names or column values that name a predefined split
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation"}
SPLIT_ALIASES |= {"val": "validation", "dev": "validation", "test": "test"}

Indices = list[int]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if (
        len(fractions) != 3
        or any(f < 0 for f in fractions)
        or abs(sum(fractions) - 1.0) > 1e-6
        or fractions[0] <= 0
    ):
        raise ValueError(
            f"fractions must be (train, validation, test) >= 0 summing to 1 with train > 0, got {fractions}"
        )
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def _n_parts(fraction: float) -> int:
    return max(2, round(1.0 / fraction))


def _take_group_part(
    idx: np.ndarray, fraction: float, labels: np.ndarray | None, groups: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, part) with ``part`` about ``fraction`` of it and no group in both."""
    n_parts = _n_parts(fraction)
    n_groups = len(np.unique(groups[idx]))
    if n_groups < n_parts:
        raise DataError(
            f"cannot take a {fraction:.0%} group-disjoint part of {len(idx)} clips in {n_groups} groups: it is one "
            f"of {n_parts} folds of whole groups, so it needs at least {n_parts} groups; add groups or change the "
            "fractions"
        )
    strat = labels[idx] if labels is not None else np.zeros(len(idx))
    splitter = StratifiedGroupKFold(n_parts, shuffle=True, random_state=seed)
    rest, part = next(splitter.split(idx, strat, groups[idx]))
    return idx[rest], idx[part]


def min_clips_per_class(n_classes: int, fractions: Sequence[float]) -> int:
    """The fewest clips per class with which ``n_classes`` equally large classes split stratified into
    (train, validation, test) ``fractions``: both draws (test from all, validation from the rest) must leave every
    part at least one clip per class and every class two clips to draw from, as scikit-learn requires."""
    _, f_val, f_test = _check_fractions(fractions)
    stages = [f for f in (f_test, f_val / max(1.0 - f_test, 1e-12)) if f > 0]
    for m in range(2, 1_000_000):
        n, per_class, ok = n_classes * m, m, True
        for frac in stages:
            part = math.ceil(frac * n)
            ok = ok and per_class >= 2 and part >= n_classes and n - part >= n_classes
            n, per_class = n - part, per_class - math.ceil(part / n_classes)
        if ok:
            return m
    raise ValueError(f"no number of clips per class splits {n_classes} classes into {tuple(fractions)}")


def _take_part(
    idx: np.ndarray, fraction: float, labels: np.ndarray | None, seed: int, fractions: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    strat = labels[idx] if labels is not None else None
    try:
        rest, part = train_test_split(
            idx, test_size=fraction, random_state=seed, shuffle=True, stratify=strat
        )
    except ValueError as e:
        if labels is None:
            raise DataError(
                f"cannot split {len(idx)} clips into {tuple(fractions)} (scikit-learn: {e})"
            ) from e
        raise DataError(_too_small(e, labels, fractions)) from e
    return np.asarray(rest), np.asarray(part)


def _too_small(error: Exception, labels: np.ndarray, fractions: Sequence[float]) -> str:
    """Why a stratified (train, validation, test) split failed, with the clips per class it needs."""
    counts = Counter(labels.tolist())
    smallest, count = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    need = min_clips_per_class(len(counts), fractions)
    return (
        f"cannot split {len(labels)} clips of {len(counts)} classes into train/validation/test {tuple(fractions)} "
        f"stratified by class (scikit-learn: {error}). With these fractions each class needs at least {need} "
        f"clips ({need * len(counts)} in all); the smallest class, {smallest!r}, has {count}. Add clips, drop or "
        "merge small classes, or change the fractions"
    )


def split_indices(
    n: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    labels: Sequence[Hashable] | None = None,
    groups: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> dict[str, Indices]:
    """Split ``n`` rows into train/validation/test, stratified by ``labels`` and disjoint in ``groups`` if given.

    With groups (e.g. artists), parts are drawn with scikit-learn's ``StratifiedGroupKFold``: the test part is one
    of ``round(1 / test_fraction)`` folds (then validation likewise from the rest), so fractions are approximate.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, sorted indices; empty parts for zero fractions.

    Raises:
        DataError: too few clips (per class, or groups) for the fractions; the message says how many are needed.
    """
    _, f_val, f_test = _check_fractions(fractions)
    lab = _as_array(labels, n, "labels")
    grp = _as_array(groups, n, "groups")
    rest, out = np.arange(n), {}
    for name, frac, of_rest in (
        ("test", f_test, f_test),
        ("validation", f_val, f_val / max(1.0 - f_test, 1e-12)),
    ):
        if frac == 0:
            out[name] = np.array([], dtype=np.int64)
            continue
        if grp is not None:
            rest, out[name] = _take_group_part(rest, of_rest, lab, grp, seed)
        else:
            rest, out[name] = _take_part(rest, of_rest, lab, seed, fractions)
    out["train"] = rest
    return {k: sorted(int(i) for i in out[k]) for k in ("train", "validation", "test")}


def kfold(
    n: int,
    n_folds: int,
    fold_index: int,
    labels: Sequence[Hashable] | None = None,
    groups: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> dict[str, Indices]:
    """Fold ``fold_index`` of a shuffled k-fold split: stratified by ``labels``, group-disjoint by ``groups``.

    Returns:
        ``{"train": [...], "test": [...]}``; over ``fold_index = 0..n_folds-1`` the test parts cover every row once.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= fold_index < n_folds:
        raise ValueError(f"fold_index must be in [0, {n_folds}), got {fold_index}")
    lab = _as_array(labels, n, "labels")
    grp = _as_array(groups, n, "groups")
    if grp is not None and len(np.unique(grp)) < n_folds:
        raise DataError(f"{n_folds} folds need at least {n_folds} groups, got {len(np.unique(grp))}")
    if grp is not None:  # a constant label makes StratifiedGroupKFold a shuffled, size-balanced GroupKFold
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        lab = lab if lab is not None else np.zeros(n)
    elif lab is not None:
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_folds, shuffle=True, random_state=seed)
    try:
        train, test = list(splitter.split(np.zeros(n), lab, grp))[fold_index]
    except ValueError as e:
        counts = Counter(lab.tolist()) if lab is not None else Counter({"all": n})
        smallest, count = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
        raise DataError(
            f"cannot make {n_folds} folds of {n} clips (scikit-learn: {e}). Each of the {n_folds} test folds "
            f"takes a share of every class, so a class needs at least {n_folds} clips; the smallest, {smallest!r}, "
            f"has {count}. Lower n_folds or add clips"
        ) from e
    return {"train": sorted(int(i) for i in train), "test": sorted(int(i) for i in test)}


def holdout_kfold(
    groups: Sequence[Hashable], n_folds: int, fold_index: int, test_fraction: float = 0.15, seed: int = 0
) -> dict[str, Indices]:
    """A fixed group-disjoint test set, then k-fold cross-validation over the remaining groups.

    Groups are shuffled with ``seed``; whole groups go to the test set until it holds at least ``test_fraction`` of
    the rows. The remaining groups are dealt into ``n_folds`` folds, largest group first to the fold with the fewest
    rows (so folds are balanced). Fold ``fold_index`` is the validation set, the other folds the training set; the
    test set is the same for every fold.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, sorted indices.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= fold_index < n_folds:
        raise ValueError(f"fold_index must be in [0, {n_folds}), got {fold_index}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    sizes = Counter(groups)
    order = sorted(sizes, key=str)
    np.random.default_rng(seed).shuffle(order)
    test_groups: set[Hashable] = set()
    n_test = 0
    while n_test < test_fraction * len(groups):
        test_groups.add(order[len(test_groups)])
        n_test += sizes[order[len(test_groups) - 1]]
    rest = [g for g in order if g not in test_groups]
    if len(rest) < n_folds:
        raise ValueError(
            f"{n_folds} folds need at least {n_folds} groups outside the test set, got {len(rest)}"
        )
    fold_of: dict[Hashable, int] = {}
    totals = [0] * n_folds
    for g in sorted(rest, key=lambda g: -sizes[g]):  # stable: ties keep the shuffled order
        f = int(np.argmin(totals))
        fold_of[g], totals[f] = f, totals[f] + sizes[g]
    out: dict[str, Indices] = {"train": [], "validation": [], "test": []}
    for i, g in enumerate(groups):
        part = "test" if g in test_groups else "validation" if fold_of[g] == fold_index else "train"
        out[part].append(i)
    return out


def check_disjoint(parts: Mapping[str, Iterable[Hashable]], what: str) -> None:
    """Raise ``ValueError`` naming the ``what`` values (e.g. artists) found in more than one part."""
    seen: dict[Hashable, str] = {}
    clashes = []
    for name, values in parts.items():
        for v in set(values):
            if v in seen and seen[v] != name:
                clashes.append(f"{v!r} ({seen[v]} and {name})")
            seen.setdefault(v, name)
    if clashes:
        raise ValueError(f"{len(clashes)} {what}(s) appear in more than one split: {', '.join(clashes[:20])}")


def _as_array(values: Sequence[Hashable] | None, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} rows")
    arr = np.empty(n, dtype=object)
    arr[:] = [str(v) for v in values]  # one comparable type, whatever the caller passed
    return arr
