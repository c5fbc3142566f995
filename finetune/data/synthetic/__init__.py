"""Procedurally generated data sets for demos, tests and benchmarks: ten genre-like styles, mixtures of
them tagged with the styles present (multi-label), and piano performances with PercePiano-style ratings. No files, no network; deterministic from a seed.

>>> from finetune.data.synthetic import synthetic_genres_splits, synthetic_piano, synthetic_radio

One module per job:

- :mod:`.synth`: note events, the pitched voices (additive and FM, rendered as batched matrix products)
  and the drum templates.
- :mod:`.styles`: the style table (:data:`GENRE_STYLES`, :class:`GenreStyle`, :class:`Part`), scales,
  chords and the step-pattern notation.
- :mod:`.genres`: the arranger (:func:`render_genre_clip`), the genre data sets and the radio stream.
- :mod:`.piano`: piano performances, their ratings, the renderer and :func:`synthetic_piano`.
- :mod:`.tags`: the multi-label set: clips mixing 1-3 styles, tagged with the styles present.
- :mod:`.storage`: the Arrow columns the data sets are built from.

Names with a leading underscore are shared between these modules but are not part of the public API.
"""

from heads.rating import PERCEPIANO_DIMENSIONS

from .genres import Segment, render_genre_clip, synthetic_genres, synthetic_genres_splits, synthetic_radio
from .piano import (
    PianoPerformance,
    piano_ratings,
    render_piano_clip,
    sample_piano_performance,
    synthetic_piano,
)
from .styles import GENRE_STYLES, GENRES, GenreStyle, Part
from .tags import render_tags_clip, synthetic_tags, synthetic_tags_splits

__all__ = [
    "GENRES",
    "GENRE_STYLES",
    "PERCEPIANO_DIMENSIONS",
    "GenreStyle",
    "Part",
    "PianoPerformance",
    "Segment",
    "piano_ratings",
    "render_genre_clip",
    "render_piano_clip",
    "render_tags_clip",
    "sample_piano_performance",
    "synthetic_genres",
    "synthetic_genres_splits",
    "synthetic_piano",
    "synthetic_radio",
    "synthetic_tags",
    "synthetic_tags_splits",
]
