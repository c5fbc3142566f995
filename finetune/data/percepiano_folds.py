"""PercePiano's fold protocols: which segments test and which validate, and what never sits in two splits.

Every protocol gives a fixed test set and ``n_folds`` folds over the other segments: fold ``fold_index``
validates, the rest train, and the test set is the same for every fold. They differ in what stays together:

- ``performer``: a player (the labels' player id) is never in two splits; whole players, in seeded order, go to
  the test set until it holds at least 15% of the segments.
- ``excerpt``: an excerpt (``<piece>_<N>bars_<segment>``: every performance of the same bars) is never in two
  splits; test set as for ``performer``.
- ``composition``: a piece (a movement or a variation: ``Schubert_D960_mv3``, ``Beethoven_WoO80_var27``) is never
  in two splits; whole pieces, in seeded order, go to the test set while it stays within 15%.
- ``performer_official``: PercePiano's ``performer4fold``, the file name's performer field mapped as the official
  script maps it; test set ids 1 and 2, folds ids {3, 4}, {5, 6}, {7, 8}, {9, 10}; the rest always trains. *Not*
  player-disjoint (below).
- ``excerpt_official``: PercePiano's ``composition4fold``: excerpts, drawn by the official rule (below).
- ``random``: segments in seeded order until the test set holds at least 15%.

PercePiano's own script calls its excerpt folds "composition" folds, and this library called them ``piece``
folds: but an excerpt is a few bars, and the other excerpts of the same movement sit in the other splits (three
Schubert movements hold most segments, so most test segments come from movements that are also trained on).
Only ``composition`` keeps pieces apart. Its splits are uneven, because the pieces are: Schubert's D960 third
and second movements hold 559 and 288 of the 1189 segments, D935 no. 3 116, and WoO 80's theme and 16 of its
variations 13 or 14 each (20 pieces). The test set therefore takes whole pieces in seeded order only while they
fit within 15% (so never a D960 movement), and the large movements each fill a fold of their own. (WoO 80's
variations share their theme; they are separate pieces here, as the data set names them.)

The official protocols follow the PercePiano repository's split scripts (``virtuoso/.../pyScoreParser/
m2pf_dataset_{performerfold,compositionfold}.py``); ``seed`` does not apply to them and ``n_folds`` must be 4:

- ``performer_official`` is deterministic. It maps the file name's performer field to an id: ``Score`` 0,
  ``Score2`` -1, a Beethoven field its position in the list of Beethoven performers, any other field its number.
  The same pianist therefore gets different ids in Beethoven and Schubert files (player 0 is field 1 in both, id 0
  in Beethoven and 1 in Schubert), and some players are in training and test data at once.
- ``excerpt_official`` shuffles the file list with Python's ``random`` seeded 42, groups the segments by excerpt
  in the shuffled order, draws excerpts with ``random.choice`` (only those with two or more segments) into the
  test set until it holds 15%, and deals the remaining excerpts to folds round-robin in order of appearance. The
  published lists depend on the order in which the authors' file system listed the directory, which was not
  recorded; here the listing is taken sorted by file name, so the folds are what the official script gives for a
  sorted listing.

Both official scripts keep a segment only if its file name equals a label key up to case, so the one MIDI file
whose name begins with a space (``" Schubert_D935_no.3_4bars_2_1.mid"``) is in none of their splits.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from backbones.config import did_you_mean

from .splits import check_disjoint, holdout_kfold

__all__ = [
    "FOLD_PROTOCOLS",
    "FoldProtocol",
    "Folds",
    "Segment",
    "check_fold_arguments",
    "fold_protocol",
    "known_fold_names",
    "parse_segment_name",
    "split_segments",
]

TEST_FRACTION = 0.15  # the official scripts' held-out share
_NAME = re.compile(r"^(?P<piece>.+)_(?P<bars>\d+)bars_(?P<performer>[^_]+)_(?P<segment>\d+)$")
_OFFICIAL_FOLDS = 4
_OFFICIAL_SEED = 42  # m2pf_dataset_compositionfold.py
_BEETHOVEN_PERFORMERS = (1, 2, 3, 4, 7, 11, 14, 18, 19, 22, 24, 26)  # m2pf_dataset_performerfold.py, in order
_OFFICIAL_TEST_IDS = (1, 2)


def parse_segment_name(name: str) -> dict[str, str]:
    """Split ``<piece>_<N>bars_<performer>_<segment>`` into its fields plus ``excerpt`` (the name minus performer).

    Raises:
        ValueError: the name does not have that form.
    """
    m = _NAME.match(name.strip())
    if m is None:
        raise ValueError(f"segment name {name!r} is not of the form <piece>_<N>bars_<performer>_<segment>")
    return {**m.groupdict(), "excerpt": f"{m['piece']}_{m['bars']}bars_{m['segment']}"}


@dataclass(frozen=True)
class Segment:
    """What the fold protocols know of a segment.

    Attributes:
        name: its label key (surrounding whitespace removed).
        file_stem: the name of its file without suffix, exactly as found (the official scripts match on it).
        player: the labels' player id.
        piece, excerpt, performer: fields of the name (:func:`parse_segment_name`); ``performer`` is the file
            name's performer field, which is not the player id.
    """

    name: str
    file_stem: str
    player: int
    piece: str
    excerpt: str
    performer: str

    @classmethod
    def from_name(cls, file_stem: str, player: int) -> Segment:
        """The segment of the file named ``file_stem`` (no suffix) played by ``player``.

        Raises:
            ValueError: the name is not of the PercePiano form.
        """
        f = parse_segment_name(file_stem)
        return cls(file_stem.strip(), file_stem, int(player), f["piece"], f["excerpt"], f["performer"])


@dataclass(frozen=True)
class Folds:
    """Row indices of the three splits, and the rows a protocol leaves out of all of them (with the reason)."""

    train: list[int]
    validation: list[int]
    test: list[int]
    left_out: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, list[int]]:
        """``{"train": ..., "validation": ..., "test": ...}``."""
        return {"train": self.train, "validation": self.validation, "test": self.test}


SplitFn = Callable[[Sequence[Segment], int, int, int], Folds]


@dataclass(frozen=True)
class FoldProtocol:
    """A named way to split PercePiano.

    Attributes:
        name: the ``fold=`` value.
        group: a segment's group; no group is in two splits.
        split: ``(segments, n_folds, fold_index, seed) -> Folds``.
        summary: one line on what stays together, for messages and docs.
        official: reproduces a PercePiano script (fixed seed, 4 folds).
    """

    name: str
    group: Callable[[Segment], str]
    split: SplitFn
    summary: str
    official: bool = False


FOLD_PROTOCOLS: dict[str, FoldProtocol] = {}

# Names that used to mean something less than they said: name -> (protocol used, what to say).
_RENAMED = {
    "piece": (
        "excerpt",
        "fold='piece' gives excerpt-disjoint folds, as it always did: performances of one excerpt stay together, "
        "but other excerpts of the same piece are in the other splits. It is renamed 'excerpt'; for folds that "
        "keep whole pieces apart pass fold='composition'. The name 'piece' will be removed.",
    )
}


def _register(
    name: str, group: Callable[[Segment], str], summary: str, official: bool = False
) -> Callable[[SplitFn], SplitFn]:
    def wrap(fn: SplitFn) -> SplitFn:
        FOLD_PROTOCOLS[name] = FoldProtocol(name, group, fn, summary, official)
        return fn

    return wrap


def fold_protocol(name: str) -> FoldProtocol:
    """The protocol called ``name`` (a renamed one warns with ``FutureWarning`` and gives its new protocol).

    Raises:
        ValueError: no such protocol.
    """
    if name in _RENAMED:
        target, message = _RENAMED[name]
        warnings.warn(message, FutureWarning, stacklevel=3)
        return FOLD_PROTOCOLS[target]
    if name not in FOLD_PROTOCOLS:
        raise ValueError(
            f"fold must be one of {', '.join(FOLD_PROTOCOLS)}, got {name!r}"
            + did_you_mean(name, FOLD_PROTOCOLS)
        )
    return FOLD_PROTOCOLS[name]


def known_fold_names() -> tuple[str, ...]:
    """Every accepted ``fold=`` value, renamed ones included."""
    return (*FOLD_PROTOCOLS, *_RENAMED)


def check_fold_arguments(protocol: FoldProtocol, n_folds: int, fold_index: int) -> None:
    """Reject ``n_folds``/``fold_index`` the protocol cannot have, before any data is read.

    Raises:
        ValueError: fewer than 2 folds, ``fold_index`` outside them, or an official protocol without 4 folds.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= fold_index < n_folds:
        raise ValueError(f"fold_index must be in [0, {n_folds}), got {fold_index}")
    if protocol.official and n_folds != _OFFICIAL_FOLDS:
        raise ValueError(
            f"fold={protocol.name!r} has the official {_OFFICIAL_FOLDS} folds; got n_folds={n_folds}"
        )


def split_segments(
    segments: Sequence[Segment], fold: str, n_folds: int = 4, fold_index: int = 0, seed: int = 0
) -> Folds:
    """Split ``segments`` by protocol ``fold`` and check that no group of the protocol is in two splits.

    Raises:
        ValueError: unknown protocol, bad ``n_folds``/``fold_index``, or too few groups for the folds.
    """
    protocol = fold_protocol(fold)
    check_fold_arguments(protocol, n_folds, fold_index)
    folds = protocol.split(segments, n_folds, fold_index, seed)
    parts = {k: [protocol.group(segments[i]) for i in v] for k, v in folds.as_dict().items()}
    check_disjoint(parts, what=f"{protocol.name} group")
    return folds


def _seeded(column: Callable[[Segment], object]) -> SplitFn:
    def split(segments: Sequence[Segment], n_folds: int, fold_index: int, seed: int) -> Folds:
        parts = holdout_kfold([str(column(s)) for s in segments], n_folds, fold_index, TEST_FRACTION, seed)
        return Folds(parts["train"], parts["validation"], parts["test"])

    return split


_register("performer", lambda s: str(s.player), "each player (labels' player id) in one split")(
    _seeded(lambda s: s.player)
)
_register("excerpt", lambda s: s.excerpt, "all performances of one excerpt in one split")(
    _seeded(lambda s: s.excerpt)
)


@_register("composition", lambda s: s.piece, "each piece (movement or variation) in one split")
def _composition(segments: Sequence[Segment], n_folds: int, fold_index: int, seed: int) -> Folds:
    """Whole pieces into the test set in seeded order while they fit within 15%; the rest dealt into folds."""
    sizes: dict[str, int] = {}
    for s in segments:
        sizes[s.piece] = sizes.get(s.piece, 0) + 1
    order = sorted(sizes)
    np.random.default_rng(seed).shuffle(order)
    budget, test_pieces = TEST_FRACTION * len(segments), set()
    for piece in order:
        if sizes[piece] <= budget:
            test_pieces.add(piece)
            budget -= sizes[piece]
    if not test_pieces:
        raise ValueError(f"no piece is small enough for a {TEST_FRACTION:.0%} test set: {sizes}")
    rest = [i for i, s in enumerate(segments) if s.piece not in test_pieces]
    parts = holdout_kfold([segments[i].piece for i in rest], n_folds, fold_index, 0.0, seed)
    test = [i for i, s in enumerate(segments) if s.piece in test_pieces]
    return Folds([rest[j] for j in parts["train"]], [rest[j] for j in parts["validation"]], test)


_register("random", lambda s: s.name, "segments drawn at random")(_seeded(lambda s: s.name))


def _officially_listed(segments: Sequence[Segment]) -> tuple[list[int], dict[int, str]]:
    """Indices the official scripts keep (file name equal to the label key up to case), and why others go."""
    kept, left_out = [], {}
    for i, s in enumerate(segments):
        if s.file_stem.lower() == s.name.lower():
            kept.append(i)
        else:
            left_out[i] = "its file name differs from its label key, which the official script requires"
    return kept, left_out


def _official_performer_id(s: Segment) -> int | None:
    """The id PercePiano's ``performer4fold`` script gives the file name's performer field (None: it fails)."""
    if s.performer in ("Score", "Score2"):
        return 0 if s.performer == "Score" else -1
    if not s.performer.isdigit():
        return None
    if "Beethoven" in s.file_stem:
        n = int(s.performer)
        return _BEETHOVEN_PERFORMERS.index(n) if n in _BEETHOVEN_PERFORMERS else None
    return int(s.performer)


@_register(
    "performer_official",
    lambda s: str(_official_performer_id(s)),
    "PercePiano's performer4fold (file name's performer field, not player-disjoint)",
    official=True,
)
def _performer_official(segments: Sequence[Segment], n_folds: int, fold_index: int, seed: int) -> Folds:
    kept, left_out = _officially_listed(segments)
    folds = Folds([], [], [], left_out)
    validation_ids = (2 * fold_index + 3, 2 * fold_index + 4)
    for i in kept:
        pid = _official_performer_id(segments[i])
        if pid is None:
            left_out[i] = f"the official script cannot place performer field {segments[i].performer!r}"
        elif pid in _OFFICIAL_TEST_IDS:
            folds.test.append(i)
        else:
            (folds.validation if pid in validation_ids else folds.train).append(i)
    return folds


@_register(
    "excerpt_official",
    lambda s: s.excerpt,
    "PercePiano's composition4fold (excerpts, seed 42, sorted listing)",
    official=True,
)
def _excerpt_official(segments: Sequence[Segment], n_folds: int, fold_index: int, seed: int) -> Folds:
    kept, left_out = _officially_listed(segments)
    listing = sorted(kept, key=lambda i: segments[i].file_stem + ".mid")
    rng = random.Random(_OFFICIAL_SEED)
    rng.shuffle(listing)
    groups: dict[str, list[int]] = {}  # in order of first appearance in the shuffled listing
    for i in listing:
        groups.setdefault(segments[i].excerpt, []).append(i)
    if not any(len(g) > 1 for g in groups.values()):
        raise ValueError("the official excerpt protocol needs excerpts with two or more segments")
    test: list[int] = []
    while len(test) < TEST_FRACTION * len(listing):
        key = rng.choice(list(groups))
        if len(groups[key]) > 1:
            test.extend(groups.pop(key))
        elif not any(len(g) > 1 for g in groups.values()):
            raise ValueError("the official excerpt protocol ran out of excerpts with two or more segments")
    fold_of = {key: n % n_folds for n, key in enumerate(groups)}
    train = sorted(i for key, g in groups.items() if fold_of[key] != fold_index for i in g)
    validation = sorted(i for key, g in groups.items() if fold_of[key] == fold_index for i in g)
    return Folds(train, validation, sorted(test), left_out)
