"""ParaShapes text for the stage-0 language model (`paradiffusion.lm.data.LMTextDataModule(sources=[...])`).

The rule that matters most here lives with the source: the evaluation splits' phrasing (`heldout`, and `test`) is
never language-model training text. `heldout` measures generalisation to phrasings nobody trained on; if the LM had
seen them, its hidden states would carry that advantage into every later stage.
"""
from __future__ import annotations

from collections.abc import Sequence

from paradiffusion.lm.text_sources import TextSource

# ParaShapes splits whose text the LM must never see (see module docstring).
EVAL_ONLY_SPLITS = frozenset({"heldout", "test"})


def check_splits(splits: Sequence[str]) -> None:
    """Refuse evaluation splits (and unknown ones) before any text is generated."""
    from .generate import SPLITS

    bad = sorted(set(splits) & EVAL_ONLY_SPLITS)
    if bad:
        raise ValueError(
            f"splits: {bad} is evaluation-only; its phrasing must not be used for language-model training "
            f"(use stage1/stage2/stage3/val)"
        )
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits: unknown split(s) {unknown}; choose from {', '.join(SPLITS)}")


class ParaShapesText(TextSource):
    """Paragraphs of `n_per_split` ParaShapes scenes from each split, in a fixed order.

    Args:
        splits: ParaShapes splits to take paragraphs from; `heldout` and `test` are refused (their phrasing is for
            evaluation only), when the source is built (config time), not after minutes of generation.
        n_per_split: scenes generated per split.
        seed: the generation seed.
    """

    def __init__(self, splits: Sequence[str] = ("stage1", "stage2", "stage3"), n_per_split: int = 2000,
                 seed: int = 0) -> None:
        check_splits(splits)
        if n_per_split < 1:
            raise ValueError(f"n_per_split={n_per_split}: expected >= 1")
        self.splits, self.n_per_split, self.seed = list(splits), int(n_per_split), int(seed)

    def documents(self) -> list[str]:
        import parashapes  # looked up at call time: `parashapes.generate_split` is the one generator

        return [spec.paragraph for split in self.splits
                for spec in parashapes.generate_split(split, self.n_per_split, seed=self.seed)]
