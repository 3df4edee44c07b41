"""Sentence templates of every writer family (data only; the assembly logic is in `writers.py`).

Markup: `{field}` is filled from the object's (randomly worded) attributes, see `writers._object_fields`;
`§` marks where the object is *first referred to* -- its character offset is recorded in `mentions`.
A sentence's first letter is capitalised after filling, so templates may start with a field.

Fields: size color shape shape2 pos posn full a_full a_shape a_size a_color a_size_shape a_color_shape
a_size_color, and for relative templates rel anchor (anchor = "<color> <shape>" of an earlier object).
"""
from __future__ import annotations

from dataclasses import dataclass

from .lexicon import HELDOUT, TRAIN, Lexicon


@dataclass(frozen=True)
class ParagraphFamily:
    """Everything a long-paragraph writer says; `paragraph` (training) and `heldout` are two instances."""

    name: str
    lex: Lexicon
    openers: tuple[str, ...]
    backgrounds: tuple[str, ...]  # {bg} / {a_bg}
    closers: tuple[str, ...]
    moods: tuple[str, ...]  # distractors about mood, light, style: true of every ParaShapes image
    absolute: tuple[str, ...]  # object introductions by absolute grid position
    relative: tuple[str, ...]  # object introductions relative to an earlier-mentioned object
    absent_combo: tuple[str, ...]  # {color} {shape} that does not occur together
    absent_shape: tuple[str, ...]
    absent_color: tuple[str, ...]
    empty_cell: tuple[str, ...]  # {posn} of an empty cell
    count: tuple[str, ...]  # {n_word} {shapes} {is_are}
    restate: tuple[str, ...]  # about an already-mentioned object: {ref} {size} {color}
    compare: tuple[str, ...]  # {big} is larger than {small}, both already mentioned


PARAGRAPH = ParagraphFamily(
    name="paragraph",
    lex=TRAIN,
    openers=(
        "This image shows a simple arrangement of geometric shapes.",
        "The picture is a minimal composition of flat shapes.",
        "What follows describes a small abstract picture.",
        "Here is a plain, diagram-like image.",
        "The scene is an abstract arrangement laid out on an invisible three-by-three grid.",
        "This is a simple graphic made of a few basic shapes.",
    ),
    backgrounds=(
        "The background is {bg}.",
        "Everything is drawn on a plain {bg} backdrop.",
        "The canvas itself is {bg}.",
        "Behind everything lies a flat {bg} field.",
        "All of this sits on {a_bg} background.",
        "The backdrop is a uniform {bg}.",
    ),
    closers=(
        "That is everything in the picture.",
        "Nothing else is drawn.",
        "Apart from these shapes, the canvas is empty.",
        "There is nothing more to see.",
    ),
    moods=(
        "The whole picture has a calm, orderly feel.",
        "The light is even, without any harsh glare.",
        "Nothing in the image is blurred or out of focus.",
        "There is no text, logo or signature anywhere in the frame.",
        "The shapes do not overlap; each one keeps to its own patch of space.",
        "The composition looks a little like a board game seen from above.",
        "It is the kind of picture you might find in a children's puzzle book.",
        "The edges of every shape are crisp and clean.",
        "The mood is quiet, almost meditative.",
        "There are no people, animals or plants in this picture.",
        "No lines or borders divide the canvas into cells.",
        "The image feels deliberately simple, as if drawn with a ruler and a compass.",
        "The arrangement seems random, yet it feels balanced.",
        "Each shape has one color only, without patterns or stripes.",
        "The picture looks tidy and carefully arranged.",
        "Someone seems to have placed every piece with care.",
        "At first glance the scene looks almost empty, but it rewards a closer look.",
        "The atmosphere is cheerful and a little playful.",
        "There is a sense of stillness, as if nothing here could ever move.",
        "It is impossible to tell what time of day it is.",
        "No horizon, sky or ground is visible; the shapes simply float.",
        "The image has the clean look of a vector illustration.",
        "Nothing is written on any of the shapes.",
        "The spacing between the pieces leaves plenty of empty room.",
        "The scene could be the opening move of a strange puzzle.",
        "There is no frame or border around the picture.",
        "Viewed from a distance, the picture reads like a simple diagram.",
        "It is a quiet, minimal composition with nothing superfluous.",
        "No shape is rotated or tilted; everything stands upright.",
        "The colors look bright and saturated against the background.",
    ),
    absolute=(
        # one sentence, all four attributes
        "{pos}, there is §{a_full}.",
        "§{a_full} sits {pos}.",
        "You can spot §{a_full} {pos}.",
        "The {posn} is occupied by §{a_full}.",
        "{pos} rests §{a_full}.",
        "Look {pos} and you will find §{a_full}.",
        "Placed {pos} is §{a_full}.",
        "§{a_full} has been drawn {pos}.",
        "There is also §{a_full}, located {pos}.",
        "Someone has painted §{a_full} {pos}.",
        "{pos} we find §{a_full}, drawn with clean edges.",
        "The {posn} holds §{a_full}.",
        "{pos}, §{a_full} catches the eye.",
        "One more element is §{a_full} that sits {pos}.",
        "Moving on, §{a_full} occupies the {posn}.",
        "As for the {posn}, it contains §{a_full}.",
        # attributes spread over sentences, joined by coreference
        "§{a_shape} sits {pos}. It is painted {color}, and it is {size}.",
        "{pos} there is §{a_size_shape}. Its color is {color}.",
        "§Something {size} appears {pos}: {a_shape}. The {shape2} is colored {color}.",
        "There is §{a_color} object {pos}. It is {a_size_shape}.",
        "§{a_size_color} shape has been placed {pos}. Looking closely, it turns out to be {a_shape}.",
        "Notice §the {shape} {pos}. This one is {size} and {color}.",
        "§{a_color_shape} appears in the picture. It sits {pos}, and it is rather {size}.",
        "§A further shape can be seen {pos}. It is {a_size_shape}, and its paint is {color}.",
        "§{a_shape} is part of the scene as well. The {shape2} is {size}. It has a {color} tone, "
        "and it sits {pos}.",
        "Among the shapes there is §{a_size} one {pos}. That one is {a_color_shape}.",
        "The next shape is §{a_shape}. It is {size}, it is {color}, and it sits {pos}.",
        "Then comes §{a_color_shape}: {size}, and placed {pos}.",
    ),
    relative=(
        "§{a_full} sits {rel} the {anchor}.",
        "{rel} the {anchor}, there is §{a_full}.",
        "If you look {rel} the {anchor}, you will find §{a_size_shape}. It is {color}.",
        "The {anchor} has a companion {rel} it: §{a_full}.",
        "§{a_full} has been set {rel} the {anchor}.",
        "Positioned {rel} the {anchor} is §{a_size_shape}, colored {color}.",
        "§{a_color_shape} can be found {rel} the {anchor}; it is {size}.",
        "Take the {anchor} as a landmark: §{a_full} lies {rel} it.",
    ),
    absent_combo=(
        "There is no {color} {shape} anywhere.",
        "Note that the picture contains no {color} {shape}.",
        "You will not see any {color} {shape} here.",
    ),
    absent_shape=(
        "You will not find a single {shape} in this picture.",
        "Not one {shape} appears in the scene.",
    ),
    absent_color=(
        "Nothing {color} appears in the scene.",
        "The color {color} is missing entirely.",
    ),
    empty_cell=(
        "The {posn} is empty.",
        "Nothing occupies the {posn}.",
        "The {posn} has been left blank.",
    ),
    count=(
        "Altogether, the picture contains {n_word} {shapes}.",
        "In total there {is_are} {n_word} {shapes} to look at.",
    ),
    restate=(
        "The {ref} looks freshly painted.",
        "The {ref} has perfectly crisp edges.",
        "Once again, the {ref} is {size}.",
        "To repeat, the {ref} is {color}.",
        "The eye keeps drifting back to the {ref}.",
    ),
    compare=(
        "The {big} is clearly bigger than the {small}.",
        "Next to the {big}, the {small} looks tiny.",
    ),
)


HELDOUT_PARAGRAPH = ParagraphFamily(
    name="heldout",
    lex=HELDOUT,
    openers=(
        "Consider a spare geometric canvas.",
        "Picture a sparse abstract canvas.",
        "The following concerns an austere abstract canvas.",
    ),
    backgrounds=(
        "The ground color is {bg}.",
        "Beneath the pieces stretches {a_bg} surface.",
        "The canvas is tinted {bg} throughout.",
    ),
    closers=(
        "No further pieces exist.",
        "The canvas holds nothing else.",
    ),
    moods=(
        "The ambience is hushed and austere.",
        "Illumination is uniform; no glare is visible.",
        "Not one letter or numeral is printed on the canvas.",
        "No creature or foliage inhabits the composition.",
        "The arrangement evokes a sparse tabletop game.",
        "Every outline is sharp, as if cut from paper with a scalpel.",
        "A feeling of serenity pervades the whole canvas.",
        "No piece touches another; generous gaps separate them.",
        "The work resembles a specimen sheet from a geometry primer.",
        "Nothing about the canvas hints at a season or a location.",
        "Every piece stands upright, none of them tilted.",
        "The overall impression is spare and deliberate.",
        "One could mistake it for a signage pictogram.",
        "It would suit the cover of a minimalist pamphlet.",
        "Observers often call such layouts soothing.",
        "The pieces hover without any ground beneath them.",
    ),
    absolute=(
        "§{a_full} is stationed {pos}.",
        "{pos}, one notices §{a_full}.",
        "Occupying the {posn} is §{a_full}.",
        "§{a_size_shape}, {color} in hue, can be located {pos}.",
        "Glance {pos}: §{a_full} waits there.",
        "§{a_shape} has been stamped {pos}. Its hue is {color}, and in scale it is {size}.",
        "Yet another piece, §{a_color_shape}, is stationed {pos}; in scale it is {size}.",
        "The {posn} is home to §{a_full}.",
        "§{a_size_color} piece, namely {a_shape}, is stamped {pos}.",
        "Your eye lands {pos} on §{a_full}.",
        "§One piece lives {pos}. That piece is {a_size_shape} with {a_color} hue.",
        "Stamped {pos}, §{a_full} completes part of the layout.",
    ),
    relative=(
        "§{a_full} is stationed {rel} the {anchor}.",
        "{rel} the {anchor}, one notices §{a_full}.",
        "Consider the {anchor}; §{a_full} is stamped {rel} it.",
        "§{a_color_shape} of {size} scale lies {rel} the {anchor}.",
    ),
    absent_combo=(
        "Nowhere does {a_color} {shape} appear.",
        "The layout lacks any {color} {shape}.",
    ),
    absent_shape=(
        "Not a single {shape} is present.",
        "The layout includes no {shape} whatsoever.",
    ),
    absent_color=(
        "No trace of {color} can be seen.",
        "The hue {color} plays no part here.",
    ),
    empty_cell=(
        "The {posn} stays vacant.",
        "The {posn} remains unoccupied.",
    ),
    count=(
        "The canvas holds {n_word} {pieces} in all.",
    ),
    restate=(
        "The {ref} appears newly stamped.",
        "Recall that the {ref} is {size} in scale.",
        "Recall that the hue of the {ref} is {color}.",
    ),
    compare=(
        "The {big} outweighs the {small} in scale.",
        "Beside the {big}, the {small} seems dwarfed.",
    ),
)


# ---------------------------------------------------------------- caption (stage 1, alt-text analog)
CAPTION_POSITIONS: dict[str, tuple[str, ...]] = {
    "top-left": ("top left", "upper left", "top-left corner"),
    "top": ("top", "top middle", "upper center"),
    "top-right": ("top right", "upper right", "top-right corner"),
    "left": ("left", "middle left", "left side"),
    "center": ("center", "middle", "centre"),
    "right": ("right", "middle right", "right side"),
    "bottom-left": ("bottom left", "lower left", "bottom-left corner"),
    "bottom": ("bottom", "bottom middle", "lower center"),
    "bottom-right": ("bottom right", "lower right", "bottom-right corner"),
}
#: object phrases: {size} {color} {shape} {cpos}
CAPTION_OBJECT = (
    "§{size} {color} {shape}",
    "§{color} {shape}",
    "§{size} {color} {shape}, {cpos}",
    "§{color} {shape} at {cpos}",
    "§{color} {shape} ({cpos})",
    "§{size} {color} {shape} {cpos}",
)
#: whole captions: {o1} {o2} {bg} {a_o1}
CAPTION_ONE = (
    "{o1}",
    "{o1} on {bg}",
    "{o1} on {a_bg} background",
    "image of {a_o1}",
    "{o1} icon, {bg} backdrop",
    "clip art: {o1}",
    "{bg} background with {a_o1}",
    "stock graphic {o1}",
)
CAPTION_TWO = (
    "{o1} and {o2}",
    "{o1}, {o2}",
    "{o1} and {o2} on {bg}",
    "{o1} with {o2}",
    "{o1} next to {o2}, {bg} background",
    "shapes: {o1}, {o2}",
)
CAPTION_MORE = (" and other shapes", " plus more", ", more shapes")


# ---------------------------------------------------------------- curated (stage 3, ParaImage-Small analog)
CURATED_OPENERS = (
    "This carefully composed illustration shows {n_word} {shapes} on a softly lit {bg} background.",
    "A tidy, softly shaded picture presents {n_word} {shapes} against {a_bg} backdrop.",
    "On {a_bg} background with a gentle gradient, {n_word} {shapes} {is_are} arranged with care.",
)
#: {ord} is "First", "Next", ... (dropped, with its comma, for a one-object scene)
CURATED_OBJECT = (
    "{ord}, §{a_full} rests {pos}, casting a faint shadow.",
    "{ord}, {pos}, the artist has placed §{a_full}.",
    "{ord}, the {posn} holds §{a_full} with soft shading.",
    "{ord}, §{a_full} is positioned neatly {pos}.",
    "{ord}, there is §{a_full} {pos}, lit gently from the upper left.",
    "{ord}, {pos} we see §{a_full}, its edges clean and smooth.",
    "{ord}, §{a_full} occupies the {posn}.",
    "{ord}, the viewer finds §{a_full} {pos}.",
)
CURATED_ORDINALS = ("First", "Next", "Then", "Finally")
CURATED_PADDING = (
    "Soft light falls from the upper left, and each shape casts a gentle shadow toward the lower right.",
    "The background fades gently from top to bottom, giving the picture a calm, finished look.",
    "Every shape is drawn with smooth edges and a subtle shading that makes it look slightly raised.",
    "The spacing is generous, so each shape is easy to see.",
    "Nothing else appears in the picture.",
)
