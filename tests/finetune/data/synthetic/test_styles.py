"""The style table: GTZAN's genre names, and every part, drum, scale and chord it names exists."""

from __future__ import annotations

import pytest

from finetune.data.synthetic import GENRE_STYLES, GENRES
from finetune.data.synthetic.genres import _RULES
from finetune.data.synthetic.styles import _CHORDS, _SCALES
from finetune.data.synthetic.synth import _DRUMS, _VOICES


def test_gtzan_genre_names() -> None:
    assert GENRES == (
        "blues",
        "classical",
        "country",
        "disco",
        "hiphop",
        "jazz",
        "metal",
        "pop",
        "reggae",
        "rock",
    )


@pytest.mark.parametrize("genre", GENRES)
def test_every_name_in_a_style_is_in_its_table(genre: str) -> None:
    style = GENRE_STYLES[genre]
    assert {p.voice for p in style.parts} <= set(_VOICES)
    assert {p.rule for p in style.parts} <= set(_RULES)
    assert {drum for kit in style.drums for drum in kit} <= set(_DRUMS)
    assert set(style.scales) <= set(_SCALES)
    assert {quality for prog in style.progressions for _, quality in prog} <= set(_CHORDS)
