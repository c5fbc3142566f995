"""The style table of the synthetic genres: step-pattern notation, scales, chords and the ten styles.

Styles (:data:`GENRES`, named like GTZAN's) differ in tempo range, meter, step patterns for drums, bass,
comping and lead, swing, chord progressions and modes, instrumentation and distortion. The timing helpers here
turn a tempo into a beat grid and a step pattern into hits; they and the chord voicing serve the piano
performances too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

# Step-pattern characters -> velocity; "." is a rest, "?" plays half the time.
_VELOCITY = MappingProxyType({"X": 1.0, "x": 0.78, "o": 0.45, "?": 0.7})


@dataclass(frozen=True)
class Part:
    """One pitched part of a style.

    Attributes:
        voice: Key of the voice (timbre) table.
        rule: How pitches are chosen: ``block``/``power`` chords, ``arp``eggio, ``root``, ``root_fifth``,
            ``octave``, ``walk`` (walking bass), ``boogie``, ``melody``.
        patterns: Step patterns cycled over the clip (one picked per clip). ``X`` accent, ``x`` note, ``o``
            ghost, ``?`` note with probability 1/2, ``.`` rest.
        register: MIDI note at the bottom of the part's range.
        gate: Range of note length as a fraction of the time to the part's next note.
        level_db: Mix level (RMS, dB) before the per-clip balance jitter.
        prob: Probability that the part plays in a clip.
        drive: Range of ``tanh`` distortion drive (0: clean).
    """

    voice: str
    rule: str
    patterns: tuple[str, ...]
    register: int
    gate: tuple[float, float] = (0.8, 1.0)
    level_db: float = 0.0
    prob: float = 1.0
    drive: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class GenreStyle:
    """A procedural style: timing, harmony, drums and parts. See :data:`GENRE_STYLES`.

    Attributes:
        tempo: BPM range. meter: beats per bar. steps_per_beat: grid resolution (3: triplets).
        swing: Range of the position of the off-beat 8th within the beat (0.5: straight).
        drift: Std of the per-beat log-tempo random walk (rubato).
        scales: Modes for melodies (keys of the scale table).
        progressions: Chord sequences of ``(semitones above the key, quality)``; ``chords_per_bar`` per bar.
        drums: Variants (one per clip) mapping drum names to step patterns.
        parts: The pitched parts.
        drum_level_db: Mix level of the drum kit.
    """

    tempo: tuple[float, float]
    meter: int
    steps_per_beat: int
    swing: tuple[float, float]
    drift: float
    scales: tuple[str, ...]
    progressions: tuple[tuple[tuple[int, str], ...], ...]
    chords_per_bar: int
    drums: tuple[Mapping[str, str], ...]
    parts: tuple[Part, ...]
    drum_level_db: float = 0.0


_SCALES = MappingProxyType(
    {
        "major": (0, 2, 4, 5, 7, 9, 11),
        "minor": (0, 2, 3, 5, 7, 8, 10),
        "dorian": (0, 2, 3, 5, 7, 9, 10),
        "mixolydian": (0, 2, 4, 5, 7, 9, 10),
        "phrygian": (0, 1, 3, 5, 7, 8, 10),
        "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
        "major_pent": (0, 2, 4, 7, 9),
        "minor_pent": (0, 3, 5, 7, 10),
        "blues": (0, 3, 5, 6, 7, 10),
    }
)
_CHORDS = MappingProxyType(
    {
        "maj": (0, 4, 7),
        "min": (0, 3, 7),
        "dom7": (0, 4, 7, 10),
        "min7": (0, 3, 7, 10),
        "maj7": (0, 4, 7, 11),
        "min9": (0, 3, 7, 10, 14),
        "dom9": (0, 4, 7, 10, 14),
        "dim": (0, 3, 6),
        "sus4": (0, 5, 7),
        "pow": (0, 7),
    }
)

# fmt: off
_BLUES_12 = (((0, "dom7"),) * 4 + ((5, "dom7"),) * 2 + ((0, "dom7"),) * 2
             + ((7, "dom7"), (5, "dom7"), (0, "dom7"), (7, "dom7")))
_QUICK_12 = ((0, "dom7"), (5, "dom7"), (0, "dom7"), (0, "dom7")) + _BLUES_12[4:]

GENRE_STYLES: Mapping[str, GenreStyle] = MappingProxyType({
    "blues": GenreStyle(
        tempo=(60, 112), meter=4, steps_per_beat=3, swing=(0.5, 0.5), drift=0.006,
        scales=("blues", "minor_pent"), progressions=(_BLUES_12, _QUICK_12), chords_per_bar=1,
        drums=({"kick": "x.....x.....", "snare": "...x.....x..", "hat": "x.xx.xx.xx.x"},
               {"kick": "x..x..x..x..", "snare": "...X.....X..", "ride": "x.xx.xx.xx.x"}),
        parts=(Part("bass", "boogie", ("x.xx.xx.xx.x", "x..x..x..x.."), 36, (0.6, 0.9), -2),
               Part("pluck", "block", ("x.xx.xx.xx.x", "...x.....x.."), 52, (0.3, 0.7), -5, drive=(1.0, 3.0)),
               Part("reed", "melody", ("x.?x.?..?x.?", "?..x.?x..?.x"), 62, (0.6, 1.0), -4, prob=0.7))),
    "classical": GenreStyle(
        tempo=(56, 132), meter=3, steps_per_beat=4, swing=(0.5, 0.5), drift=0.035,
        scales=("major", "harmonic_minor"),
        progressions=(((0, "maj"), (5, "maj"), (7, "dom7"), (0, "maj")),
                      ((0, "min"), (5, "min"), (7, "dom7"), (0, "min"), (8, "maj"), (2, "dim"), (7, "dom7"),
                       (0, "min")),
                      ((0, "maj"), (9, "min"), (2, "min"), (7, "dom7"))),
        chords_per_bar=1, drums=(),
        parts=(Part("piano", "arp", ("x.x.x.x.x.x.", "xxxxxxxxxxxx", "x...x...x..."), 48, (0.8, 1.0), -3),
               Part("strings", "block", ("x...........",), 55, (1.0, 1.0), -6, prob=0.7),
               Part("strings", "root", ("x.......x...",), 36, (1.0, 1.0), -8, prob=0.6),
               Part("piano", "melody", ("x...x...x...", "x.x.x...x.x.", "x.......x.x."), 67, (0.7, 1.0),
                    -3))),
    "country": GenreStyle(
        tempo=(92, 140), meter=4, steps_per_beat=4, swing=(0.5, 0.56), drift=0.004,
        scales=("major_pent", "major"),
        progressions=(((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),
                      ((0, "maj"), (0, "maj"), (7, "dom7"), (0, "maj"))),
        chords_per_bar=1,
        drums=({"kick": "x.......x.......", "brush": "....x.......x...", "shaker": "x.x.x.x.x.x.x.x."},
               {"kick": "x.......x.......", "snare": "....x.......x...", "hat": "xxxxxxxxxxxxxxxx"}),
        parts=(Part("bass", "root_fifth", ("x.......x.......",), 36, (0.4, 0.7), -2),
               Part("pluck", "block", ("....x.......x...", "..x.x.x...x.x.x."), 55, (0.2, 0.4), -5),
               Part("twang", "melody", ("x.x.?.x.x.?.x...", "x.?.x.x.?.x.x.x."), 64, (0.5, 0.9), -5,
                    prob=0.8))),
    "disco": GenreStyle(
        tempo=(108, 132), meter=4, steps_per_beat=4, swing=(0.5, 0.52), drift=0.0,
        scales=("dorian", "minor"),
        progressions=(((0, "min7"), (5, "min7")), ((0, "min7"), (3, "maj7"), (5, "min7"), (7, "min7"))),
        chords_per_bar=1, drum_level_db=1.0,
        drums=({"kick": "x...x...x...x...", "ohat": "..x...x...x...x.", "hat": "x.x.x.x.x.x.x.x.",
                "clap": "....x.......x..."},
               {"kick": "x...x...x...x...", "ohat": "..x...x...x...x.", "snare": "....x.......x..."}),
        parts=(Part("bass", "octave", ("x.x.x.x.x.x.x.x.",), 36, (0.4, 0.7), -2),
               Part("epiano", "block", ("..x..x....x..x..", "x..x..x..x..x.x."), 55, (0.2, 0.5), -6),
               Part("strings", "block", ("x...............",), 62, (1.0, 1.0), -9, prob=0.6),
               Part("bell", "melody", ("x.x.?.x.?.x.x.?.",), 72, (0.4, 0.8), -9, prob=0.5))),
    "hiphop": GenreStyle(
        tempo=(78, 100), meter=4, steps_per_beat=4, swing=(0.54, 0.66), drift=0.0,
        scales=("minor", "dorian", "minor_pent"),
        progressions=(((0, "min7"), (8, "maj7")), ((0, "min9"), (5, "min7")), ((0, "min7"), (10, "dom7"))),
        chords_per_bar=1, drum_level_db=2.0,
        drums=({"kick": "X......x..x.....", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "X.....x...x..x..", "clap": "....X.......X...", "hat": "x.xox.xox.xox.xo"},
               {"kick": "X..x......X.....", "snare": "....X.......X..o", "hat": "xxxxxxxxxxxxxxxx"}),
        parts=(Part("sub", "root", ("x......x..x.....", "x.........x....."), 29, (0.8, 1.0), 0),
               Part("epiano", "block", ("x.......x.......", "x.....x........."), 57, (0.8, 1.0), -7),
               Part("pad", "block", ("x...............",), 55, (1.0, 1.0), -10, prob=0.5),
               Part("bell", "melody", ("x...?...x...?...",), 72, (0.5, 0.9), -10, prob=0.4))),
    "jazz": GenreStyle(
        tempo=(100, 200), meter=4, steps_per_beat=3, swing=(0.5, 0.5), drift=0.005,
        scales=("dorian", "mixolydian", "major"),
        progressions=(((2, "min7"), (7, "dom9"), (0, "maj7"), (0, "maj7")),
                      ((2, "min7"), (7, "dom7"), (0, "maj7"), (9, "dom7")),
                      ((0, "min7"), (5, "dom7"), (10, "maj7"), (3, "maj7"))),
        chords_per_bar=1,
        drums=({"ride": "x..x.xx..x.x", "hat": "...x.....x..", "kick": "x.....?....."},
               {"ride": "x..x.xx..x.x", "hat": "...x.....x..", "snare": "..o.....o..?"}),
        parts=(Part("bass", "walk", ("x..x..x..x..",), 33, (0.8, 1.0), -2),
               Part("epiano", "block", ("..x.....x...", "x....x...?..", ".....x..x..."), 53, (0.3, 0.7), -6),
               Part("reed", "melody", ("x.xx.xx.?x.x", "x.?x.x?.xx.?"), 62, (0.6, 1.0), -4, prob=0.8))),
    "metal": GenreStyle(
        tempo=(96, 176), meter=4, steps_per_beat=4, swing=(0.5, 0.5), drift=0.0,
        scales=("phrygian", "minor", "harmonic_minor"),
        progressions=(((0, "pow"), (1, "pow"), (0, "pow"), (8, "pow")),
                      ((0, "pow"), (10, "pow"), (8, "pow"), (7, "pow"))),
        chords_per_bar=2, drum_level_db=1.0,
        drums=({"kick": "xxxxxxxxxxxxxxxx", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."},
               {"kick": "x.x.xx.xx.x.xx.x", "snare": "....X.......X...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.x.x.x.x.x.x.x.", "snare": "..x...x...x...x.", "ride": "x...x...x...x..."}),
        parts=(Part("saw", "power", ("x.x.xx.xx.x.xx.x", "xxxxxxxxxxxxxxxx", "x..x..x.x..x..x."), 40,
                    (0.3, 0.6), 0, drive=(6.0, 14.0)),
               Part("bass", "root", ("x.x.x.x.x.x.x.x.",), 28, (0.5, 0.8), -4, drive=(1.0, 3.0)))),
    "pop": GenreStyle(
        tempo=(92, 126), meter=4, steps_per_beat=4, swing=(0.5, 0.53), drift=0.0,
        scales=("major_pent", "major"),
        progressions=(((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
                      ((9, "min"), (5, "maj"), (0, "maj"), (7, "maj")),
                      ((0, "maj"), (5, "maj"), (9, "min"), (7, "sus4"))),
        chords_per_bar=1,
        drums=({"kick": "x.....x.x.......", "clap": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.......x.x.....", "snare": "....x.......x...", "shaker": "xxxxxxxxxxxxxxxx"}),
        parts=(Part("bass", "root", ("x.....x.x.....x.", "x.x.x.x.x.x.x.x."), 36, (0.5, 0.9), -2),
               Part("pad", "block", ("x.......x.......",), 55, (1.0, 1.0), -7),
               Part("pluck", "arp", ("x.x.x.x.x.x.x.x.", "x..x..x.x..x..x."), 60, (0.4, 0.8), -8, prob=0.6),
               Part("lead", "melody", ("x.x.x...x.?.x...", "..x.x.x.x...x.x."), 67, (0.6, 0.9), -5,
                    prob=0.8))),
    "reggae": GenreStyle(
        tempo=(64, 92), meter=4, steps_per_beat=4, swing=(0.5, 0.6), drift=0.0,
        scales=("minor", "major", "dorian"),
        progressions=(((0, "min"), (5, "min")), ((0, "maj"), (5, "maj")), ((0, "min"), (10, "maj"))),
        chords_per_bar=1,
        drums=({"kick": "........x.......", "rim": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.......x.......", "snare": "........x.......", "hat": "..x...x...x...x."}),
        parts=(Part("bass", "root_fifth", ("x..x....x.x.....", "x.....x.x......."), 33, (0.6, 0.9), 0),
               Part("pluck", "block", ("....x.......x...", "..x...x...x...x."), 57, (0.1, 0.25), -4),
               Part("organ", "block", ("..xx..xx..xx..xx",), 55, (0.2, 0.4), -9, prob=0.6),
               Part("reed", "melody", ("x...x.?.....x.?.",), 64, (0.6, 1.0), -8, prob=0.4))),
    "rock": GenreStyle(
        tempo=(100, 152), meter=4, steps_per_beat=4, swing=(0.5, 0.52), drift=0.003,
        scales=("minor_pent", "mixolydian", "major"),
        progressions=(((0, "pow"), (5, "pow"), (7, "pow"), (5, "pow")),
                      ((0, "pow"), (10, "pow"), (5, "pow"), (0, "pow")),
                      ((0, "maj"), (7, "maj"), (5, "maj"), (5, "maj"))),
        chords_per_bar=1,
        drums=({"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
               {"kick": "x.....x.x.......", "snare": "....x.......x...", "ride": "x.x.x.x.x.x.x.x."}),
        parts=(Part("saw", "power", ("x.x.x.x.x.x.x.x.", "x.......x.......", "x..x..x.x..x..x."), 43,
                    (0.6, 0.95), 0, drive=(2.0, 6.0)),
               Part("bass", "root", ("x.x.x.x.x.x.x.x.",), 33, (0.6, 0.9), -3),
               Part("lead", "melody", ("x.x.?.x.x.?.x...",), 64, (0.6, 1.0), -6, prob=0.4,
                    drive=(1.0, 3.0)))),
})
# fmt: on
GENRES: tuple[str, ...] = tuple(GENRE_STYLES)


# ----------------------------------------------------------------------------------------------------- timing


def _beat_grid(n_beats: int, tempo: float, drift: float, rng: np.random.Generator) -> np.ndarray:
    """Beat boundaries in seconds ``[n_beats + 1]`` with a smoothed log-tempo random walk of std ``drift``."""
    walk = np.cumsum(rng.normal(0.0, drift, n_beats))
    walk = np.convolve(walk, np.ones(3) / 3, mode="same") - walk.mean()
    return np.concatenate([[0.0], np.cumsum(60.0 / tempo * np.exp(walk))])


def _step_times(beats: np.ndarray, steps_per_beat: int, swing: float) -> np.ndarray:
    """Onset of every grid step; with swing the off-beat 8th sits at ``swing`` of the beat (others follow)."""
    x = np.arange(steps_per_beat) / steps_per_beat
    if swing != 0.5 and steps_per_beat % 2 == 0:
        x = np.where(x < 0.5, x / 0.5 * swing, swing + (x - 0.5) / 0.5 * (1 - swing))
    return (beats[:-1, None] + np.diff(beats)[:, None] * x[None, :]).reshape(-1)


def _hits(pattern: str, n_steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Step indices and velocities of ``pattern`` cycled over ``n_steps`` steps."""
    chars = np.array(list(pattern))[np.arange(n_steps) % len(pattern)]
    on = np.isin(chars, list(_VELOCITY)) & ((chars != "?") | (rng.random(n_steps) < 0.5))
    steps = np.flatnonzero(on)
    vel = np.array([_VELOCITY[c] for c in chars[steps]]) + rng.normal(0, 0.06, len(steps))
    return steps, np.clip(vel, 0.1, 1.0)


# ---------------------------------------------------------------------------------------------------- pitches


def _voicing(root_pc: int, quality: str, register: int) -> list[int]:
    """Closed voicing of a chord: each chord tone at or above ``register``."""
    lowest = register + (root_pc - register) % 12
    return [lowest + iv for iv in _CHORDS[quality]]
