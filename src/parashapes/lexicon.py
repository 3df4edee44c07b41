"""Wordings of every attribute value: the training lexicon and the held-out lexicon.

`TRAIN` is used by every training/evaluation writer (caption, paragraph, curated); `HELDOUT` only by the
`heldout` split. No held-out wording occurs in training text (tests check it), so the `heldout` split
measures how far the text encoder generalises to unseen words for the same scene content.

Multi-word wordings that must count as one attribute are hyphenated where natural ("royal-blue").
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lexicon:
    """All the ways of saying each attribute value (>= 3 each)."""

    colors: dict[str, tuple[str, ...]]
    shapes: dict[str, tuple[str, ...]]
    sizes: dict[str, tuple[str, ...]]
    #: prepositional phrases ("in the upper left corner"); must name exactly one grid cell
    positions: dict[str, tuple[str, ...]]
    #: noun phrases ("upper left corner") for "the {posn} holds ..."
    position_nouns: dict[str, tuple[str, ...]]
    backgrounds: dict[str, tuple[str, ...]]
    #: relative placements keyed by (d_row, d_col) of the new object from an anchor: "directly below"
    relations: dict[tuple[int, int], tuple[str, ...]]


TRAIN = Lexicon(
    colors={
        "red": ("red", "crimson", "scarlet", "cherry-red"),
        "green": ("green", "emerald", "grass-green", "leaf-green"),
        "blue": ("blue", "cobalt", "royal-blue", "sapphire"),
        "yellow": ("yellow", "lemon-yellow", "canary", "golden-yellow"),
        "purple": ("purple", "violet", "plum", "grape-colored"),
        "orange": ("orange", "tangerine", "pumpkin-orange", "carrot-orange"),
        "cyan": ("cyan", "turquoise", "aqua", "bright-cyan"),
        "pink": ("pink", "rose-pink", "bubblegum-pink", "flamingo-pink"),
    },
    shapes={
        "circle": ("circle", "disc", "round dot", "orb"),
        "square": ("square", "square tile", "block", "box"),
        "triangle": ("triangle", "wedge", "three-sided shape", "pyramid shape"),
    },
    sizes={
        "small": ("small", "tiny", "little", "compact"),
        "large": ("large", "big", "huge", "oversized"),
    },
    positions={
        "top-left": ("in the top-left corner", "in the upper left corner", "at the top left-hand corner",
                     "in the northwest corner of the frame"),
        "top": ("at the top, centered", "in the middle of the top edge", "at the upper center",
                "along the top edge, halfway across"),
        "top-right": ("in the top-right corner", "in the upper right corner", "at the top right-hand corner",
                      "in the northeast corner of the frame"),
        "left": ("on the left side, halfway down", "in the middle of the left edge", "at the left-center spot",
                 "on the west side of the frame, midway down"),
        "center": ("in the center", "in the very middle", "dead center", "right in the middle of the picture"),
        "right": ("on the right side, halfway down", "in the middle of the right edge", "at the right-center spot",
                  "on the east side of the frame, midway down"),
        "bottom-left": ("in the bottom-left corner", "in the lower left corner", "at the bottom left-hand corner",
                        "in the southwest corner of the frame"),
        "bottom": ("at the bottom, centered", "in the middle of the bottom edge", "at the lower center",
                   "along the bottom edge, halfway across"),
        "bottom-right": ("in the bottom-right corner", "in the lower right corner",
                         "at the bottom right-hand corner", "in the southeast corner of the frame"),
    },
    position_nouns={
        "top-left": ("top-left corner", "upper left corner", "northwest corner"),
        "top": ("middle of the top edge", "upper center", "top-center cell"),
        "top-right": ("top-right corner", "upper right corner", "northeast corner"),
        "left": ("middle of the left edge", "left-center spot", "left-center cell"),
        "center": ("center", "very middle", "central cell"),
        "right": ("middle of the right edge", "right-center spot", "right-center cell"),
        "bottom-left": ("bottom-left corner", "lower left corner", "southwest corner"),
        "bottom": ("middle of the bottom edge", "lower center", "bottom-center cell"),
        "bottom-right": ("bottom-right corner", "lower right corner", "southeast corner"),
    },
    backgrounds={
        "white": ("white", "snow-white", "bright white", "paper-white"),
        "black": ("black", "jet-black", "pitch-black", "inky black"),
        "gray": ("gray", "grey", "slate-gray", "ash-gray"),
    },
    relations={
        (1, 0): ("directly below", "just beneath", "right underneath"),
        (-1, 0): ("directly above", "just above", "one step above"),
        (0, 1): ("immediately to the right of", "one step to the right of", "just to the right of"),
        (0, -1): ("immediately to the left of", "one step to the left of", "just to the left of"),
        (1, 1): ("diagonally below and to the right of", "one step down and one step right of",
                 "diagonally down-right from"),
        (1, -1): ("diagonally below and to the left of", "one step down and one step left of",
                  "diagonally down-left from"),
        (-1, 1): ("diagonally above and to the right of", "one step up and one step right of",
                  "diagonally up-right from"),
        (-1, -1): ("diagonally above and to the left of", "one step up and one step left of",
                   "diagonally up-left from"),
        (2, 0): ("two steps below", "at the opposite end of the column, straight below",
                 "two full cells below"),
        (-2, 0): ("two steps above", "at the opposite end of the column, straight above",
                  "two full cells above"),
        (0, 2): ("two steps to the right of", "at the far right end of the same row as",
                 "two full cells to the right of"),
        (0, -2): ("two steps to the left of", "at the far left end of the same row as",
                  "two full cells to the left of"),
    },
)

HELDOUT = Lexicon(
    colors={
        "red": ("vermilion", "ruby", "tomato-colored"),
        "green": ("jade", "lime", "forest-toned"),
        "blue": ("ultramarine", "navy", "cornflower"),
        "yellow": ("mustard", "saffron", "buttercup"),
        "purple": ("lilac", "mauve", "aubergine"),
        "orange": ("apricot", "marigold", "papaya"),
        "cyan": ("teal", "aquamarine", "seafoam"),
        "pink": ("salmon", "fuchsia", "blush"),
    },
    shapes={
        "circle": ("roundel", "medallion", "coin shape"),
        "square": ("quadrate", "cube face", "checker piece"),
        "triangle": ("trigon", "arrowhead", "delta shape"),
    },
    sizes={
        "small": ("diminutive", "pint-sized", "minuscule"),
        "large": ("enormous", "hefty", "jumbo"),
    },
    positions={
        "top-left": ("where the upper border meets the left border", "high on the left flank",
                     "pressed against the upper and left borders"),
        "top": ("high up, equidistant from both sides", "hugging the upper border midway across",
                "at twelve o'clock"),
        "top-right": ("where the upper border meets the right border", "high on the right flank",
                      "pressed against the upper and right borders"),
        "left": ("hugging the left border at mid-height", "at nine o'clock", "midway along the left flank"),
        "center": ("at the heart of the canvas", "at the bullseye", "equidistant from all four borders"),
        "right": ("hugging the right border at mid-height", "at three o'clock", "midway along the right flank"),
        "bottom-left": ("where the lower border meets the left border", "low on the left flank",
                        "pressed against the lower and left borders"),
        "bottom": ("low down, equidistant from both sides", "hugging the lower border midway across",
                   "at six o'clock"),
        "bottom-right": ("where the lower border meets the right border", "low on the right flank",
                         "pressed against the lower and right borders"),
    },
    position_nouns={
        "top-left": ("upper-left nook", "port-side upper nook", "meeting point of the upper and left borders"),
        "top": ("twelve o'clock spot", "upper-border midpoint", "crown spot"),
        "top-right": ("upper-right nook", "starboard upper nook", "meeting point of the upper and right borders"),
        "left": ("nine o'clock spot", "left-border midpoint", "port-side flank"),
        "center": ("bullseye", "heart of the canvas", "hub"),
        "right": ("three o'clock spot", "right-border midpoint", "starboard flank"),
        "bottom-left": ("lower-left nook", "port-side lower nook", "meeting point of the lower and left borders"),
        "bottom": ("six o'clock spot", "lower-border midpoint", "foot spot"),
        "bottom-right": ("lower-right nook", "starboard lower nook", "meeting point of the lower and right borders"),
    },
    backgrounds={
        "white": ("alabaster", "chalky", "milky"),
        "black": ("onyx", "coal-colored", "obsidian"),
        "gray": ("pewter", "graphite", "smoke-colored"),
    },
    relations={
        (1, 0): ("a single hop beneath", "nestled right under", "one notch under"),
        (-1, 0): ("a single hop over", "nestled right over", "one notch over"),
        (0, 1): ("a single hop rightward of", "one notch rightward of", "adjacent on the starboard side of"),
        (0, -1): ("a single hop leftward of", "one notch leftward of", "adjacent on the port side of"),
        (1, 1): ("a single diagonal hop down-right of", "one notch southeast of", "kitty-corner, one hop down-right, from"),
        (1, -1): ("a single diagonal hop down-left of", "one notch southwest of", "kitty-corner, one hop down-left, from"),
        (-1, 1): ("a single diagonal hop up-right of", "one notch northeast of", "kitty-corner, one hop up-right, from"),
        (-1, -1): ("a single diagonal hop up-left of", "one notch northwest of", "kitty-corner, one hop up-left, from"),
    },
)


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (spelling rule; good enough for this lexicon)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"
