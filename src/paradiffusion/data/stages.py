"""One LightningDataModule per training stage of the paper.

| stage | paper | default data here |
|---|---|---|
| 1 pre-training | LAION short captions | ParaShapes ``stage1`` captions, streamed on the fly |
| 2 paragraph-image alignment | ParaImage-Big, ~133-word VLM paragraphs | ParaShapes ``stage2`` paragraphs, streamed |
| 3 quality tuning | ParaImage-Small, 3.1k curated paragraphs | ParaShapes ``stage3``: 3k curated paragraphs + curated renders |

All three share one code path (:class:`ImageTextDataModule`); the subclasses only change defaults, so a config
can swap the data source (``source: manifest | webdataset | folder``) without touching the stage.
Validation always uses ParaShapes ``val`` (fixed, finite) so ``val/loss`` is comparable across stages; ``test``
uses the ``test`` split and ``predict`` the ``heldout`` split (unseen phrasing).
"""
from __future__ import annotations

import logging
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from paradiffusion.data.collate import ParagraphCollator
from paradiffusion.data.sources import ManifestDataset, ParaShapesFolder, WebDatasetSource
from paradiffusion.data.text_cache import TextStateCache, open_text_cache
from paradiffusion.parashapes.dataset import TEXT_KINDS

log = logging.getLogger(__name__)

Source = Literal["parashapes", "folder", "manifest", "webdataset"]


class ImageTextDataModule(L.LightningDataModule):
    """Paragraph-image pairs for one training stage.

    Args:
        source: where training pairs come from: ``parashapes`` (generated on the fly, no disk), ``folder``
            (a ParaShapes folder), ``manifest`` (JSONL/CSV with ``image``, ``text``) or ``webdataset``
            (img2dataset-style tar shards; ``train_path`` may be a glob).
        train_path: path for the non-``parashapes`` sources.
        train_split: ParaShapes split for training (``stage1``/``stage2``/``stage3``).
        n_train: ``None`` streams an infinite, seeded ParaShapes split; a positive int fixes a finite set of that
            size (the ParaImage-Small analog is small on purpose); ``-1`` (default) takes the stage's default.
        style: ParaShapes render style (``plain``/``curated``); ``None`` uses the split's default.
        resolution: square image size the model sees.
        tokenizer: a tokenizer directory; by default the model's own text-encoder tokenizer is used, so the
            collate function and the encoder can never disagree.
        max_length: token cap (the paper's encoder sees up to 512); by default the model encoder's.
        train_text: what text the ParaShapes *training* pairs carry: ``paragraph`` (the split's own text) or
            ``scene_list`` (each scene's canonical scene list, "gray background. small red triangle at top. ...":
            accurate short descriptions, the form a text rewriter restates paragraphs into). With a rewriter
            (``experiments/tiny/train_on_scene_lists.yaml``) the model then trains on accurate lists and reads
            its rewriter's restatements only where it is asked to draw paragraphs (validation, test, sampling).
            Validation, test and predict always pair images with paragraphs.
        text_cache: a directory for frozen text states (`data.text_cache.TextStateCache`): before training, the
            frozen prefix of the model's LLM (`text_encoder.prefix_blocks`: every block when it is frozen, the
            blocks below LoRA with `trainable_blocks`) runs once over every training and validation paragraph, and
            batches then carry the cached states instead of running those blocks every step. Needs a finite
            training set (``n_train`` for ParaShapes, or a manifest / folder). States live in a subdirectory per
            LM, prefix depth and token cap, so one directory serves every stage and run. `None`: no cache.
        text_cache_rebuild: recompute a cache whose stored settings differ instead of refusing it.
        text_cache_batch_size: paragraphs per LLM forward pass while building the cache.
    """

    default_train_split = "stage2"
    default_n_train: int | None = None
    default_style: str | None = None

    def __init__(
        self,
        source: Source = "parashapes",
        train_path: str | None = None,
        train_split: str | None = None,
        n_train: int | None = -1,
        style: str | None = None,
        resolution: int = 32,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        val_split: str = "val",
        n_val: int = 64,
        test_split: str = "test",
        n_test: int = 128,
        predict_split: str = "heldout",
        n_predict: int = 64,
        tokenizer: str | None = None,
        max_length: int | None = None,
        train_text: Literal["paragraph", "scene_list"] = "paragraph",
        text_cache: str | None = None,
        text_cache_rebuild: bool = False,
        text_cache_batch_size: int = 16,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.source = source
        self.train_path = train_path
        self.train_split = train_split or self.default_train_split
        self.n_train = self.default_n_train if n_train == -1 else n_train
        self.style = style if style is not None else self.default_style
        self.resolution, self.batch_size, self.num_workers, self.seed = resolution, batch_size, num_workers, seed
        self.val_split, self.n_val = val_split, n_val
        self.test_split, self.n_test = test_split, n_test
        self.predict_split, self.n_predict = predict_split, n_predict
        self.tokenizer_path, self.max_length = tokenizer, max_length
        self.collator: ParagraphCollator | None = None
        if source != "parashapes" and not train_path:
            raise ValueError(f"data.source={source!r} needs data.train_path")
        if train_text not in TEXT_KINDS:
            raise ValueError(f"data.train_text={train_text!r}: expected one of {TEXT_KINDS}")
        if train_text == "scene_list" and source != "parashapes":
            raise ValueError(f"data.train_text='scene_list' needs data.source='parashapes' (scene lists are written "
                             f"from known scenes); got source={source!r}")
        self.train_text = train_text
        self.text_cache, self.text_cache_rebuild = text_cache, text_cache_rebuild
        self.text_cache_batch_size = text_cache_batch_size
        if text_cache is not None and source in ("parashapes", "webdataset") and self.n_train is None:
            raise ValueError(f"data.text_cache needs a finite training set: set data.n_train (source={source!r} "
                             "streams without end, and states are computed before training)")

    # -- set-up -------------------------------------------------------------------------------------------------
    def _make_collator(self) -> ParagraphCollator:
        encoder = getattr(getattr(self.trainer, "lightning_module", None), "text_encoder", None) if self.trainer else None
        if self.tokenizer_path is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        elif encoder is not None:
            tokenizer = encoder.tokenizer
        else:
            raise RuntimeError("no tokenizer: attach the datamodule to a Trainer with a ParaDiffusion model, "
                               "or pass data.tokenizer=DIR")
        max_length = self.max_length or getattr(encoder, "max_length", None) or 512
        cache = self.build_text_cache(encoder) if self.text_cache is not None else None
        return ParagraphCollator(tokenizer, max_length, getattr(encoder, "padding", "longest"), cache)

    def build_text_cache(self, encoder) -> TextStateCache | None:
        """Open (and complete) the text-state cache over the training and validation paragraphs."""
        if encoder is None or not hasattr(encoder, "encode_prefix"):
            raise RuntimeError("data.text_cache needs a ParaDiffusion model with an LLMTextEncoder attached")
        encoder.materialize()
        if encoder.prefix_blocks == 0:
            log.warning("data.text_cache: the text encoder has no frozen blocks (LoRA in every block); no cache used")
            return None
        if self.tokenizer_path is not None or (self.max_length and self.max_length != encoder.max_length):
            raise ValueError("data.text_cache: the cache is built with the model's own tokenizer and max_length; "
                             "leave data.tokenizer and data.max_length unset")
        cache = open_text_cache(self.text_cache, encoder, self.text_cache_rebuild)
        texts = [*self._texts(self.train_dataset()), *self._texts(self._eval_dataset("val"))]
        device = next(encoder.parameters()).device
        was_training = encoder.training
        added = cache.build(texts, encoder.tokenize, encoder.encode_prefix, self.text_cache_batch_size, device=device)
        encoder.train(was_training)
        log.info("text cache %s: %d paragraphs cached (%d new)", cache.root, len(cache), added)
        return cache

    @staticmethod
    def _texts(dataset: Dataset) -> list[str]:
        if hasattr(dataset, "texts"):
            return dataset.texts()
        return [dataset[i]["text"] for i in range(len(dataset))]

    def setup(self, stage: str | None = None) -> None:
        self.collator = self._make_collator()
        module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        if self.train_text == "scene_list" and module is not None and getattr(module, "text_rewriter", None) is None:
            log.warning("data.train_text=scene_list without a text rewriter: the model trains on scene lists but is "
                        "validated, tested and sampled on the paragraphs themselves (add experiments/tiny/rewriter.yaml "
                        "to read restatements)")

    def _parashapes(self, split: str, n: int | None, seed: int, style: str | None = None,
                    text: str = "paragraph") -> Dataset:
        from paradiffusion.parashapes import ParaShapesDataset, ParaShapesIterable

        if n is None:
            rank = self.trainer.global_rank if self.trainer else 0
            world = self.trainer.world_size if self.trainer else 1
            return ParaShapesIterable(split, resolution=self.resolution, style=style, seed=seed, rank=rank,
                                      world_size=world, text=text)
        return ParaShapesDataset(split, n, resolution=self.resolution, style=style, seed=seed, text=text)

    def train_dataset(self) -> Dataset:
        # A resumed run must not replay the samples it already trained on: offset the stream by the restored step.
        step = self.trainer.global_step if self.trainer else 0
        if self.source == "parashapes":
            seed = self.seed if self.n_train is not None else self.seed + 7919 * step
            return self._parashapes(self.train_split, self.n_train, seed, self.style, self.train_text)
        if self.source == "folder":
            return ParaShapesFolder(self.train_path, self.resolution)
        if self.source == "manifest":
            return ManifestDataset(self.train_path, self.resolution)
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        return WebDatasetSource(self.train_path, self.resolution, repeat=True, seed=self.seed + step, rank=rank, world_size=world)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        if self.collator is None:
            self.setup()
        iterable = isinstance(dataset, IterableDataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and not iterable,
            num_workers=self.num_workers,
            collate_fn=self.collator,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and not iterable,
            # An evaluation loader draws its workers' base seed from its own generator: from the global one, every
            # validation would shift the noise and timesteps of all later training steps.
            generator=None if shuffle else torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), shuffle=True)

    def _eval_dataset(self, which: str) -> Dataset:
        split, n = {"val": (self.val_split, self.n_val), "test": (self.test_split, self.n_test),
                    "predict": (self.predict_split, self.n_predict)}[which]
        return self._parashapes(split, n, self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._eval_dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._parashapes(self.test_split, self.n_test, self.seed), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._parashapes(self.predict_split, self.n_predict, self.seed), shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "train_split": self.train_split, "train_text": self.train_text}


class Stage1PretrainData(ImageTextDataModule):
    """Stage 1 — large-scale pre-training on short captions (the LAION alt-text analog)."""

    default_train_split = "stage1"


class Stage2AlignmentData(ImageTextDataModule):
    """Stage 2 — paragraph-image alignment on long paragraphs (the ParaImage-Big analog)."""

    default_train_split = "stage2"


class Stage3QualityData(ImageTextDataModule):
    """Stage 3 — quality tuning on a small curated set (the ParaImage-Small analog: 3.1k in the paper)."""

    default_train_split = "stage3"
    default_n_train = 3000
    default_style = "curated"
