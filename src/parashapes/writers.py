"""Writers: scene -> text, with the first-mention offset of every object.

Four families (issue 2):
  caption    stage-1 / LAION alt-text analog: 3-15 words, one or two objects, terse and incomplete.
  paragraph  stage-2 / ParaImage-Big analog: 60-300 words (mean ~140), 36 object templates, coreference,
             relative positions, distractors; many objects first mentioned late (see below).
  curated    stage-3 / ParaImage-Small analog: careful 50-100-word paragraphs, own template family.
  heldout    like `paragraph` but with held-out templates and wordings, used only by the `heldout` split.

Mention positions are measured in **words** (whitespace-separated) as the proxy for CLIP's 77 word-piece
tokens; a word is >= 1 word piece, so "after word 77" implies "after token 77".
Each writer returns `(text, mentions)` where mentions[i] is `{"char": c, "word": w}` for objects[i]
(`text[c:]` starts with the phrase that first refers to it) or None when the text never mentions it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .lexicon import TRAIN, Lexicon, with_article
from .spec import ObjectSpec
from .templates import (
    CAPTION_MORE, CAPTION_OBJECT, CAPTION_ONE, CAPTION_POSITIONS, CAPTION_TWO, CURATED_OBJECT,
    CURATED_OPENERS, CURATED_ORDINALS, CURATED_PADDING, HELDOUT_PARAGRAPH, PARAGRAPH, ParagraphFamily,
)
from .vocab import POSITIONS, SHAPES, COLORS, cell_of

Mention = dict[str, int] | None
MARK = "§"
NUMBER_WORDS = ("zero", "one", "two", "three", "four")

#: Paragraph length limits (words), the issue's numbers.
PARAGRAPH_MIN_WORDS, PARAGRAPH_MAX_WORDS = 60, 300


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _capitalize(s: str) -> str:
    """Upper-case the first letter, skipping the mention mark."""
    for i, ch in enumerate(s):
        if ch.isalpha():
            return s[:i] + ch.upper() + s[i + 1:]
    return s


def _object_fields(o: ObjectSpec, lex: Lexicon, rng: np.random.Generator) -> dict[str, str]:
    """Randomly worded attribute strings of one object for one sentence."""
    size, color = _pick(rng, lex.sizes[o.size]), _pick(rng, lex.colors[o.color])
    shape, shape2 = _pick(rng, lex.shapes[o.shape]), _pick(rng, lex.shapes[o.shape])
    full = f"{size} {color} {shape}"
    return {
        "size": size, "color": color, "shape": shape, "shape2": shape2,
        "pos": _pick(rng, lex.positions[o.position]), "posn": _pick(rng, lex.position_nouns[o.position]),
        "full": full, "a_full": with_article(full), "a_shape": with_article(shape),
        "a_size": with_article(size), "a_color": with_article(color),
        "a_size_shape": with_article(f"{size} {shape}"), "a_color_shape": with_article(f"{color} {shape}"),
        "a_size_color": with_article(f"{size} {color}"),
    }


def _ref(o: ObjectSpec, lex: Lexicon, rng: np.random.Generator) -> str:
    """Definite description of an already-mentioned object: "crimson disc" (colors are unique per scene)."""
    return f"{_pick(rng, lex.colors[o.color])} {_pick(rng, lex.shapes[o.shape])}"


class _Text:
    """Accumulates sentences and records the char/word offset of each object's first mention."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chars = 0
        self.words = 0
        self.mentions: dict[int, dict[str, int]] = {}

    def add(self, sentence: str, obj: int | None = None, sep: str = " ") -> None:
        sentence = _capitalize(sentence)
        mark = sentence.find(MARK)
        if mark >= 0:
            sentence = sentence.replace(MARK, "", 1)
        start = self.chars + (len(sep) if self.parts else 0)
        if obj is not None and mark >= 0 and obj not in self.mentions:
            self.mentions[obj] = {"char": start + mark, "word": self.words + len(sentence[:mark].split())}
        self.parts.append(sentence)
        self.chars = start + len(sentence)
        self.words += len(sentence.split())

    @property
    def text(self) -> str:
        return " ".join(self.parts)


# ---------------------------------------------------------------------------------------------- paragraph
def _relations(lex: Lexicon, o: ObjectSpec, mentioned: list[ObjectSpec]) -> list[tuple[ObjectSpec, tuple[str, ...]]]:
    """Earlier-mentioned anchors from which `o`'s cell is reachable by a wording the lexicon has."""
    r, c = cell_of(o.position)
    out = []
    for a in mentioned:
        ar, ac = cell_of(a.position)
        key = (r - ar, c - ac)
        if key in lex.relations:
            out.append((a, lex.relations[key]))
    return out


def _object_sentence(fam: ParagraphFamily, o: ObjectSpec, mentioned: list[ObjectSpec],
                     rng: np.random.Generator, rel_prob: float) -> str:
    f = _object_fields(o, fam.lex, rng)
    rels = _relations(fam.lex, o, mentioned)
    if rels and rng.random() < rel_prob:
        anchor, wordings = rels[int(rng.integers(len(rels)))]
        f["rel"] = _pick(rng, wordings)
        f["anchor"] = _ref(anchor, fam.lex, rng)
        return _pick(rng, fam.relative).format(**f)
    return _pick(rng, fam.absolute).format(**f)


def _static_fillers(fam: ParagraphFamily, objects: Sequence[ObjectSpec], rng: np.random.Generator) -> list[str]:
    """Distractor sentences that are true of this scene: mood/light, absent things, empty cells, count."""
    lex = fam.lex
    present = {(o.color, o.shape) for o in objects}
    colors = {o.color for o in objects}
    shapes = {o.shape for o in objects}
    cells = {o.position for o in objects}
    out = list(fam.moods)
    combos = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    for k in rng.permutation(len(combos))[:4]:
        c, s = combos[int(k)]
        col = _pick(rng, lex.colors[c])
        out.append(_pick(rng, fam.absent_combo).format(color=col, shape=_pick(rng, lex.shapes[s]),
                                                       a_color=with_article(col)))
    for s in SHAPES:
        if s not in shapes:
            out.append(_pick(rng, fam.absent_shape).format(shape=_pick(rng, lex.shapes[s])))
    absent_colors = [c for c in COLORS if c not in colors]
    for k in rng.permutation(len(absent_colors))[:2]:
        out.append(_pick(rng, fam.absent_color).format(color=_pick(rng, lex.colors[absent_colors[int(k)]])))
    empty = [p for p in POSITIONS if p not in cells]
    for k in rng.permutation(len(empty))[:2]:
        out.append(_pick(rng, fam.empty_cell).format(posn=_pick(rng, lex.position_nouns[empty[int(k)]])))
    n = len(objects)
    out.append(_pick(rng, fam.count).format(n_word=NUMBER_WORDS[n], shapes="shape" if n == 1 else "shapes",
                                            pieces="piece" if n == 1 else "pieces",
                                            is_are="is" if n == 1 else "are"))
    return [out[int(i)] for i in rng.permutation(len(out))]


def _dynamic_filler(fam: ParagraphFamily, mentioned: list[ObjectSpec], objects: Sequence[ObjectSpec],
                    rng: np.random.Generator) -> str | None:
    """A coreferent sentence about objects already introduced (restatement or size comparison)."""
    if not mentioned:
        return None
    lex = fam.lex
    if len(mentioned) >= 2 and rng.random() < 0.4:
        i, j = (int(k) for k in rng.permutation(len(mentioned))[:2])
        a, b = mentioned[i], mentioned[j]
        if a.size != b.size:
            big, small = (a, b) if a.size == "large" else (b, a)
            return _pick(rng, fam.compare).format(big=_ref(big, lex, rng), small=_ref(small, lex, rng))
    o = mentioned[int(rng.integers(len(mentioned)))]
    # name the object by shape only when restating its color ("the disc is crimson"), else by both
    shape = _pick(rng, lex.shapes[o.shape])
    ref = _ref(o, lex, rng)
    template = _pick(rng, fam.restate)
    if "{color}" in template:
        ref = shape if sum(m.shape == o.shape for m in objects) == 1 else ref
    return template.format(ref=ref, size=_pick(rng, lex.sizes[o.size]), color=_pick(rng, lex.colors[o.color]))


def _mention_targets(n: int, rng: np.random.Generator) -> tuple[list[int], int]:
    """Target first-mention word offsets (sorted) and the target total length.

    Tuned so that by default ~40% of objects are first mentioned after word 77 and a few percent after
    word 256, with paragraph lengths 60-300 (mean ~145) -- see tests/test_parashapes_text.py.
    """
    total = int(np.clip(rng.normal(125.0, 40.0), 70, 290))
    targets = sorted(int(t) for t in rng.uniform(0.0, 0.85 * total, size=n))
    if rng.random() < 0.07:  # a late scene: the last object only enters after word 256
        targets[-1] = int(rng.integers(257, 266))
        total = max(total, 280)
    return targets, total


def write_paragraph(objects: Sequence[ObjectSpec], background: str, rng: np.random.Generator,
                    family: ParagraphFamily = PARAGRAPH, rel_prob: float = 0.35) -> tuple[str, list[Mention]]:
    """Long paragraph (60-300 words) describing every object exactly, in random order, among distractors."""
    lex = family.lex
    order = [int(i) for i in rng.permutation(len(objects))]
    targets, total = _mention_targets(len(objects), rng)
    fillers = _static_fillers(family, objects, rng)
    t = _Text()
    bg = _pick(rng, lex.backgrounds[background])
    bg_sentence = _pick(rng, family.backgrounds).format(bg=bg, a_bg=with_article(bg))
    bg_slot = 0 if rng.random() < 0.6 else int(rng.integers(len(objects) + 1))  # before object k
    reserve_per_object = 32  # upper bound of one object block's words: keeps the total <= 300

    def fill_until(limit: int, remaining: int) -> None:
        budget = PARAGRAPH_MAX_WORDS - reserve_per_object * remaining - 12
        while t.words < limit:
            s = _dynamic_filler(family, mentioned, objects, rng) if rng.random() < 0.25 else None
            if s is None or s in t.parts:
                if not fillers:
                    return
                s = fillers.pop()
            if t.words + len(s.split()) > budget:
                return
            t.add(s)

    mentioned: list[ObjectSpec] = []
    if rng.random() < 0.7:
        t.add(_pick(rng, family.openers))
    for k, i in enumerate(order):
        if k == bg_slot:
            t.add(bg_sentence)
        fill_until(targets[k], len(order) - k)
        t.add(_object_sentence(family, objects[i], mentioned, rng, rel_prob), obj=i)
        mentioned.append(objects[i])
    if bg_slot == len(order):
        t.add(bg_sentence)
    fill_until(max(total, PARAGRAPH_MIN_WORDS), 0)
    if t.words < PARAGRAPH_MIN_WORDS or rng.random() < 0.5:
        t.add(_pick(rng, family.closers))
    while t.words < PARAGRAPH_MIN_WORDS:  # only reachable if every filler was used: restate objects
        t.add(_dynamic_filler(family, mentioned, objects, rng) or _pick(rng, family.closers))
    return t.text, [t.mentions.get(i) for i in range(len(objects))]


def write_heldout(objects: Sequence[ObjectSpec], background: str,
                  rng: np.random.Generator) -> tuple[str, list[Mention]]:
    """Held-out phrasing: same structure as `paragraph`, unseen templates and wordings."""
    return write_paragraph(objects, background, rng, family=HELDOUT_PARAGRAPH)


# ----------------------------------------------------------------------------------------------- caption
def write_caption(objects: Sequence[ObjectSpec], background: str, rng: np.random.Generator,
                  lex: Lexicon = TRAIN) -> tuple[str, list[Mention]]:
    """Terse alt-text (3-15 words) naming one or two of the objects, often leaving attributes out."""
    n_mention = min(len(objects), 1 if rng.random() < 0.6 else 2)
    chosen = sorted(int(i) for i in rng.permutation(len(objects))[:n_mention])
    phrases = []
    for i in chosen:
        o = objects[i]
        f = _object_fields(o, lex, rng)
        f["cpos"] = _pick(rng, CAPTION_POSITIONS[o.position])
        phrases.append(_pick(rng, CAPTION_OBJECT).format(**f))
    bg = _pick(rng, lex.backgrounds[background])
    template = _pick(rng, CAPTION_ONE if n_mention == 1 else CAPTION_TWO)
    fields = {"o1": phrases[0], "a_o1": MARK + with_article(phrases[0].replace(MARK, "")), "bg": bg,
              "a_bg": with_article(bg), "o2": phrases[1] if n_mention > 1 else ""}
    text = template.format(**fields)
    if len(objects) > n_mention and rng.random() < 0.5:
        text += _pick(rng, CAPTION_MORE)
    if len(text.replace(MARK, "").split()) < 3:
        text += f" on {bg}"
    if len(text.replace(MARK, "").split()) > 15:  # the longest combination: fall back to the plainest form
        text = " and ".join(p.split(",")[0] for p in phrases)
    # record mentions in order of the marks
    mentions: list[Mention] = [None] * len(objects)
    clean = ""
    for k, piece in enumerate(text.split(MARK)):
        if k > 0:
            mentions[chosen[k - 1]] = {"char": len(clean), "word": len(clean.split())}
        clean += piece
    return clean, mentions


# ----------------------------------------------------------------------------------------------- curated
def write_curated(objects: Sequence[ObjectSpec], background: str, rng: np.random.Generator,
                  lex: Lexicon = TRAIN) -> tuple[str, list[Mention]]:
    """Careful, well-formed 50-100-word paragraph: opener, one complete sentence per object, calm closing."""
    n = len(objects)
    t = _Text()
    bg = _pick(rng, lex.backgrounds[background])
    t.add(_pick(rng, CURATED_OPENERS).format(n_word=NUMBER_WORDS[n], shapes="shape" if n == 1 else "shapes",
                                             bg=bg, a_bg=with_article(bg), is_are="is" if n == 1 else "are"))
    order = [int(i) for i in rng.permutation(n)]
    ordinals = CURATED_ORDINALS[:n - 1] + CURATED_ORDINALS[-1:] if n > 1 else ("",)
    templates = [CURATED_OBJECT[int(k)] for k in rng.permutation(len(CURATED_OBJECT))[:n]]
    for k, i in enumerate(order):
        f = _object_fields(objects[i], lex, rng)
        s = templates[k]
        if ordinals[k]:
            s = s.replace("{ord}", ordinals[k])
        else:
            s = s.replace("{ord}, ", "")
        t.add(s.format(**f), obj=i)
    for s in CURATED_PADDING:
        if t.words >= 50 + int(rng.integers(0, 30)):
            break
        t.add(s)
    return t.text, [t.mentions.get(i) for i in range(n)]


WRITERS: dict[str, Any] = {
    "caption": write_caption, "paragraph": write_paragraph, "curated": write_curated, "heldout": write_heldout,
}
