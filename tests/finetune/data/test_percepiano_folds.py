"""PercePiano's fold protocols on the real labels and MIDI file names: what each keeps apart, how many segments
each split holds, and the official protocols against the official scripts' procedure."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pytest

from finetune.data import percepiano
from finetune.data.percepiano_folds import (
    FOLD_PROTOCOLS,
    Segment,
    fold_protocol,
    known_fold_names,
    parse_segment_name,
    split_segments,
)

LABELS = "label_2round_mean_reg_19_with0_rm_highstd0.json"
SPACED = "Schubert_D935_no.3_4bars_2_1"  # its MIDI file's name begins with a space


@pytest.fixture(scope="module")
def official(shared_dir: Path) -> tuple[list[str], dict[str, list[float]]]:
    """The MIDI file names (sorted) and the label JSON of the release."""
    folder = shared_dir / "data" / "percepiano"
    return sorted(p.name for p in (folder / "midi").iterdir()), json.loads((folder / LABELS).read_text())


@pytest.fixture(scope="module")
def segments(official: tuple[list[str], dict[str, list[float]]]) -> list[Segment]:
    """The 1189 labelled segments as the loader builds them (label key order, file stems as found)."""
    files, labels = official
    stems = {f[:-4].strip(): f[:-4] for f in files}
    return [Segment.from_name(stems[name], values[19]) for name, values in sorted(labels.items())]


def _names(segments: list[Segment], folds: object) -> dict[str, set[str]]:
    return {k: {segments[i].name for i in v} for k, v in folds.as_dict().items()}


# protocol -> (validation size of folds 0-3, test size, left out, never validating); seed 0 where seeded
COUNTS = {
    "performer": ((232, 239, 227, 226), 265, 0, 0),
    "excerpt": ((252, 252, 251, 251), 183, 0, 0),
    "composition": ((559, 288, 116, 52), 174, 0, 0),
    "random": ((253, 253, 252, 252), 179, 0, 0),
    "performer_official": ((175, 175, 162, 175), 192, 1, 309),  # ids 0, -1 (the scores) and 11+ always train
    "excerpt_official": ((247, 258, 251, 245), 187, 1, 0),
}
GROUP = {
    "performer": lambda s: s.player,
    "excerpt": lambda s: s.excerpt,
    "composition": lambda s: s.piece,
    "random": lambda s: s.name,
    "performer_official": lambda s: (s.performer, "Beethoven" in s.piece),
    "excerpt_official": lambda s: s.excerpt,
}


def test_every_protocol_is_counted_here() -> None:
    assert set(COUNTS) == set(GROUP) == set(FOLD_PROTOCOLS)
    assert known_fold_names() == (*FOLD_PROTOCOLS, "piece")


@pytest.mark.parametrize("fold", list(COUNTS))
def test_groups_never_cross_splits_and_counts(segments: list[Segment], fold: str) -> None:
    validation_sizes, n_test, n_left_out, n_always_train = COUNTS[fold]
    runs = [split_segments(segments, fold, 4, f, seed=0) for f in range(4)]
    tests = {tuple(r.test) for r in runs}
    assert len(tests) == 1 and len(runs[0].test) == n_test  # one fixed test set
    assert tuple(len(r.validation) for r in runs) == validation_sizes
    for r in runs:
        assert len(r.left_out) == n_left_out
        assert len(r.train) + len(r.validation) + len(r.test) + n_left_out == 1189
        groups = {k: {GROUP[fold](segments[i]) for i in v} for k, v in r.as_dict().items()}
        assert not (groups["train"] & groups["validation"] or groups["train"] & groups["test"])
        assert not groups["validation"] & groups["test"]
    validations = [set(r.validation) for r in runs]  # the folds partition what is neither test nor left out
    n_validating = 1189 - n_test - n_left_out - n_always_train
    assert sum(map(len, validations)) == n_validating == len(set().union(*validations))


def test_composition_keeps_every_piece_in_one_split(segments: list[Segment]) -> None:
    sizes: dict[str, int] = defaultdict(int)
    for s in segments:
        sizes[s.piece] += 1
    assert (sizes["Schubert_D960_mv3"], sizes["Schubert_D960_mv2"], sizes["Schubert_D935_no.3"]) == (
        559,
        288,
        116,
    )
    assert len(sizes) == 20  # and WoO 80's theme and 16 of its variations, 13 or 14 segments each
    assert {n for p, n in sizes.items() if p.startswith("Beethoven_WoO80_")} == {13, 14}
    for seed in range(6):
        folds = split_segments(segments, "composition", 4, 0, seed)
        pieces = {k: {segments[i].piece for i in v} for k, v in folds.as_dict().items()}
        assert sum(map(len, pieces.values())) == 20  # no piece in two splits
        assert 0.13 * 1189 < len(folds.test) <= 0.15 * 1189  # whole pieces, never over 15%
        assert not pieces["test"] & {"Schubert_D960_mv3", "Schubert_D960_mv2"}  # each larger than 15%
    # the excerpt folds do not keep pieces apart: the large movements are in all three splits
    excerpt = split_segments(segments, "excerpt", 4, 0, 0)
    pieces = {k: {segments[i].piece for i in v} for k, v in excerpt.as_dict().items()}
    assert {"Schubert_D960_mv3", "Schubert_D960_mv2"} <= pieces["train"] & pieces["validation"] & pieces[
        "test"
    ]


def _listed(files: list[str], labels: dict[str, list[float]]) -> list[str]:
    """The official scripts' file list: MIDI files whose name (no suffix) is a label key, ignoring case."""
    domain = {k.lower() for k in labels}
    return [f for f in files if ".".join(f.split(".")[:-1]).lower() in domain]


def _composition4fold(files: list[str], labels: dict[str, list[float]]) -> list[tuple[set, set, set]]:
    """PercePiano's m2pf_dataset_compositionfold.py, step by step, on a sorted listing: (train, valid, test)."""
    rng = random.Random(42)
    all_data = _listed(files, labels)
    rng.shuffle(all_data)
    groups = defaultdict(list)
    for f in all_data:
        fields = f.split("_")
        groups["_".join(fields[:-2]) + "_" + fields[-1]].append(f)
    test = []
    while len(test) < 0.15 * len(all_data):
        key = rng.choice(list(groups.keys()))
        if len(groups[key]) > 1:
            test.extend(groups[key])
            groups.pop(key)
    fold_map = {f: i % 4 for i, key in enumerate(groups) for f in groups[key]}
    rest = [f for f in all_data if f not in test]
    out = []
    for fold in range(4):
        valid = [f for f in rest if fold_map[f] == fold]
        out.append(
            ({f[:-4] for f in rest if f not in valid}, {f[:-4] for f in valid}, {f[:-4] for f in test})
        )
    return out


def _performer4fold(files: list[str], labels: dict[str, list[float]]) -> list[tuple[set, set, set]]:
    """PercePiano's m2pf_dataset_performerfold.py, step by step: (train, valid, test) of each fold."""
    beethoven = [1, 2, 3, 4, 7, 11, 14, 18, 19, 22, 24, 26]

    def fold_id(f: str) -> int:
        field = f[:-4].split("_")[-2]
        if field in ("Score", "Score2"):
            return 0 if field == "Score" else -1
        return beethoven.index(int(field)) if "Beethoven" in f else int(field)

    all_data = _listed(files, labels)
    test = [f for f in all_data if fold_id(f) in (1, 2)]
    rest = [f for f in all_data if f not in test]
    out = []
    for fold in range(4):
        valid = [f for f in rest if fold_id(f) in (fold * 2 + 3, fold * 2 + 4)]
        out.append(
            ({f[:-4] for f in rest if f not in valid}, {f[:-4] for f in valid}, {f[:-4] for f in test})
        )
    return out


@pytest.mark.parametrize(
    ("fold", "script"), [("excerpt_official", _composition4fold), ("performer_official", _performer4fold)]
)
def test_official_protocols_match_the_official_scripts(
    segments: list[Segment], official: tuple[list[str], dict[str, list[float]]], fold: str, script: object
) -> None:
    expected = script(*official)
    for f in range(4):
        got = split_segments(
            segments, fold, 4, f, seed=123
        )  # the official seeds are fixed: ``seed`` is unused
        names = _names(segments, got)
        assert (names["train"], names["validation"], names["test"]) == expected[f]
        assert [segments[i].name for i in got.left_out] == [SPACED]
        assert "differs from its label key" in got.left_out[next(iter(got.left_out))]


def test_official_performer_folds_mix_players(segments: list[Segment]) -> None:
    """The official performer4fold ids name different players in Beethoven and Schubert files: player 0 (field 1
    everywhere) is in training (Beethoven, id 0) and test data (Schubert, id 1); our ``performer`` keeps players
    apart."""
    folds = split_segments(segments, "performer_official", 4, 0)
    players = {k: {segments[i].player for i in v} for k, v in folds.as_dict().items()}
    assert players["train"] & players["test"] == {0}
    ours = split_segments(segments, "performer", 4, 0)
    players = {k: {segments[i].player for i in v} for k, v in ours.as_dict().items()}
    assert not players["train"] & players["test"] and len(set().union(*players.values())) == 22


def test_old_piece_name_warns_and_gives_the_excerpt_folds(segments: list[Segment]) -> None:
    with pytest.warns(
        FutureWarning,
        match=r"fold='piece' gives excerpt-disjoint folds, as it always did: .* pass fold='composition'",
    ):
        old = split_segments(segments, "piece", 4, 1, seed=3)
    assert old == split_segments(segments, "excerpt", 4, 1, seed=3)


def test_bad_protocol_arguments(segments: list[Segment]) -> None:
    with pytest.raises(
        ValueError,
        match=r"fold must be one of performer, excerpt, composition, random, performer_official, excerpt_official, got 'composer' \(did you mean 'composition'\?\)",
    ):
        fold_protocol("composer")
    with pytest.raises(ValueError, match=r"fold='excerpt_official' has the official 4 folds; got n_folds=5"):
        split_segments(segments, "excerpt_official", n_folds=5)
    with pytest.raises(ValueError, match=r"fold_index must be in \[0, 4\), got 4"):
        split_segments(segments, "performer", 4, 4)
    with pytest.raises(ValueError, match="n_folds must be at least 2, got 1"):
        split_segments(segments, "performer", 1, 0)
    few = [Segment.from_name(f"Piece{p}_8bars_{n}_1", 0) for p in range(4) for n in range(1 if p == 0 else 5)]
    with pytest.raises(ValueError, match=r"4 folds need at least 4 groups outside the test set, got 3"):
        split_segments(few, "composition", 4, 0)
    with pytest.raises(
        ValueError, match=r"no piece is small enough for a 15% test set: \{'Piece1': 5, 'Piece2': 5\}"
    ):
        split_segments(few[1:11], "composition", 2, 0)


def test_parse_segment_name() -> None:
    assert percepiano.parse_segment_name is parse_segment_name  # still importable from the loader
    assert parse_segment_name(" Schubert_D935_no.3_4bars_Score2_1") == {
        "piece": "Schubert_D935_no.3",
        "bars": "4",
        "performer": "Score2",
        "segment": "1",
        "excerpt": "Schubert_D935_no.3_4bars_1",
    }
    with pytest.raises(ValueError, match="not of the form"):
        parse_segment_name("Schubert_D935_1")
    seg = Segment.from_name(" Schubert_D935_no.3_4bars_2_1", 10)
    assert (seg.name, seg.file_stem, seg.piece, seg.performer) == (
        SPACED,
        " " + SPACED,
        "Schubert_D935_no.3",
        "2",
    )
