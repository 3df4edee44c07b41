"""The fixed ParaShapes scene space (issue 2). Do not shrink it: every number users cite depends on it.

Colors are chosen far apart in RGB (minimum pairwise distance ~97 levels) and all strongly chromatic
(max-min channel >= 120), so that the scorer can separate them from each other and from the three
achromatic backgrounds even after anti-aliasing, shading, blur and noise.

Geometry lives in normalised canvas units (the canvas is the unit square, y grows downwards), so a
scene renders identically at any resolution.
"""
from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Object colors, name -> sRGB (0..255). Documented in docs/parashapes.md.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 180, 60),
    "blue": (40, 70, 230),
    "yellow": (250, 225, 40),
    "purple": (150, 50, 200),
    "orange": (245, 125, 15),
    "cyan": (30, 210, 230),
    "pink": (250, 130, 200),
}

#: Backgrounds, name -> sRGB. All achromatic, so they never look like an object color.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}

SIZES: tuple[str, ...] = ("small", "large")

#: 3x3 grid, row-major. POSITIONS[3 * row + col].
POSITIONS: tuple[str, ...] = (
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
)

MIN_OBJECTS = 1
MAX_OBJECTS = 4

#: Half-extent of a shape's bounding box as a fraction of the canvas side. Cells are 1/3 wide, so two
#: large objects in neighbouring cells keep a gap of 1/3 - 2 * 0.14 = 0.053 (1.7 px at 32 px), and
#: large vs small differ by 1.87x in linear size (3.5x in area) -- clearly distinct even at 32 px.
HALF_EXTENT: dict[str, float] = {"small": 0.075, "large": 0.14}

#: Area of each shape relative to (2 * half_extent)^2: square fills its box, the disc pi/4 of it,
#: the upright isosceles triangle (base = height = box side) half of it.
AREA_FACTOR: dict[str, float] = {"square": 1.0, "circle": 3.141592653589793 / 4.0, "triangle": 0.5}


def cell_of(position: str) -> tuple[int, int]:
    """(row, col) of a grid position name."""
    i = POSITIONS.index(position)
    return divmod(i, 3)


def position_of(row: int, col: int) -> str:
    """Grid position name of (row, col), both in 0..2."""
    return POSITIONS[3 * row + col]


def cell_center(position: str) -> tuple[float, float]:
    """(x, y) center of a grid cell in normalised canvas units."""
    row, col = cell_of(position)
    return (col + 0.5) / 3.0, (row + 0.5) / 3.0


def mention_bucket(word_index: int | None) -> str:
    """Bucket of a first-mention word index: CLIP's 77-token limit and a 256-token limit, words as proxy."""
    if word_index is None:
        return "unmentioned"
    if word_index < 77:
        return "0-76"
    if word_index < 256:
        return "77-255"
    return "256+"


MENTION_BUCKETS: tuple[str, ...] = ("0-76", "77-255", "256+")
