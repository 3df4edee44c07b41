"""The DataModule of the paper's three diffusion stages: paragraph-image pairs, the datasets injected.

| stage | paper | the tiny configs here (``experiments/tiny``) |
|---|---|---|
| 1 pre-training | LAION short captions | ParaShapes ``stage1`` captions |
| 2 paragraph-image alignment | ParaImage-Big, ~133-word VLM paragraphs | ParaShapes ``stage2`` paragraphs |
| 3 quality tuning | ParaImage-Small, 3.1k curated paragraphs | ParaShapes ``stage3``: curated paragraphs + renders |

All three share one code path (:class:`ImageTextDataModule`; ``Stage1PretrainData`` etc. are its names in the
recipe). The datasets are init arguments (LightningCLI dependency injection): a config wires any
``torch.utils.data.Dataset`` by ``class_path`` / ``init_args`` -- the readers of this package, or a benchmark's
(``experiments/tiny/*.yaml`` wire ParaShapes' datasets this way)::

    data:
      class_path: paradiffusion.data.Stage2AlignmentData
      init_args:
        train_data: {class_path: paradiffusion.data.WebDatasetSource, init_args: {shards: data/*.tar, resolution: 32}}
        val_data: {class_path: paradiffusion.data.ManifestDataset, init_args: {path: val.jsonl, resolution: 32}}

or names the training pairs by ``source`` + ``train_path`` (a manifest, WebDataset shards, a caption folder).

An item is a dict ``{"id": str, "image": FloatTensor (3, R, R) in [0, 1], "text": str}``; other keys every item of a
batch has (e.g. a benchmark's ``"spec"``) reach the batch as lists. A dataset may also offer:

* ``texts() -> list[str]`` (finite datasets): every item's text without loading an image (what a text-state cache
  is built over);
* ``take(n) -> Dataset``: a finite dataset of its first ``n`` items (``n_train`` / ``n_val`` / ``n_test`` /
  ``n_predict``); without it a map-style dataset is cut with ``Subset``, and a stream cannot be cut;
* ``item_at(i) -> item`` (training streams): the stream's ``i``-th item. Training then reads it in a fixed batch
  layout (:class:`paradiffusion.resume.StreamBatches`), no two ranks read the same items, and a run resumed from a
  checkpoint reads exactly the batches the uninterrupted run would have read next;
* ``resume(step, rank, world_size) -> IterableDataset`` (training streams without ``item_at``, e.g.
  ``WebDatasetSource``): the stream as a run at optimizer step ``step`` on rank ``rank`` of ``world_size`` reads it.
  A resumed run does not replay what it already trained on, but does not read what the uninterrupted run would have.

Training sets that are finite (map-style, or cut by ``n_train``) are read in shuffled epochs whose order is a
function of ``seed`` and the epoch (:class:`paradiffusion.resume.EpochBatches`), split over the ranks; a resumed run
continues inside the epoch where it stopped. See :mod:`paradiffusion.resume` for what makes resume bit-exact.
"""
from __future__ import annotations

import logging
import warnings
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from paradiffusion.data.collate import ParagraphCollator
from paradiffusion.data.sources import ImageFolder, ManifestDataset, WebDatasetSource
from paradiffusion.data.text_cache import TextStateCache, open_text_cache
from paradiffusion.resume import EpochBatches, ResumableLoader, StreamBatches

log = logging.getLogger(__name__)

# A finite training set is read as an IterableDataset with a length (EpochBatches): it splits itself over ranks and
# workers, so Lightning's warning that such a length "could be inaccurate" does not apply.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")

Source = Literal["manifest", "webdataset", "folder"]
_DATASETS = ("train_data", "val_data", "test_data", "predict_data")


def take(dataset: Dataset, n: int, field: str) -> Dataset:
    """The first ``n`` items of ``dataset``: its own ``take(n)`` when it has one, else a ``Subset`` (map-style)."""
    if n < 0:
        raise ValueError(f"{field}={n}: expected a count >= 0, or null for the whole dataset")
    if hasattr(dataset, "take"):
        return dataset.take(n)
    if isinstance(dataset, IterableDataset):
        raise ValueError(f"{field}={n}: {type(dataset).__name__} is a stream without take(n), so it cannot be cut to "
                         f"{n} items; set {field}=null")
    return Subset(dataset, range(min(n, len(dataset))))


def dataset_texts(dataset: Dataset) -> list[str]:
    """Every item's text: ``dataset.texts()`` when it has it (no image is loaded), else item by item."""
    if isinstance(dataset, Subset) and hasattr(dataset.dataset, "texts"):
        texts = dataset.dataset.texts()
        return [texts[i] for i in dataset.indices]
    if hasattr(dataset, "texts"):
        return dataset.texts()
    return [dataset[i]["text"] for i in range(len(dataset))]


def _resolution_of(dataset: Dataset | None) -> int | None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    value = getattr(dataset, "resolution", None)
    return int(value) if isinstance(value, int) else None


class ImageTextDataModule(L.LightningDataModule):
    """Paragraph-image pairs for one training stage.

    Args:
        train_data, val_data, test_data, predict_data: the datasets (see the module docstring). ``val_data``
            ``None``: no validation; ``test_data`` / ``predict_data`` are needed by ``test`` / ``predict`` only.
        source: the training pairs by kind instead of ``train_data``: ``manifest`` (JSONL/CSV with ``image``,
            ``text``), ``webdataset`` (img2dataset-style tar shards; ``train_path`` may be a glob or a folder) or
            ``folder`` (images with same-name ``.txt`` captions).
        train_path: the path for ``source``.
        n_train: a finite training set of the first ``n_train`` training items (``None``: all of them; a stream then
            runs without end). A text-state cache needs a finite training set.
        n_val, n_test, n_predict: cut the evaluation datasets to their first items (``None``: all of them).
        resolution: the square image size the model sees. ``None``: the injected datasets' own (they must agree);
            needed with ``source``.
        tokenizer: a tokenizer directory; by default the model's own text-encoder tokenizer is used, so the
            collate function and the encoder can never disagree.
        max_length: token cap (the paper's encoder sees up to 512); by default the model encoder's.
        text_cache: a directory for frozen text states (`data.text_cache.TextStateCache`): before training, the
            frozen prefix of the model's LLM (`text_encoder.prefix_blocks`: every block when it is frozen, the
            blocks below LoRA with `trainable_blocks`) runs once over every training and validation paragraph, and
            batches then carry the cached states instead of running those blocks every step. Needs a finite
            training set. States live in a subdirectory per LM, prefix depth and token cap, so one directory serves
            every stage and run. `None`: no cache.
        text_cache_rebuild: recompute a cache whose stored settings differ instead of refusing it.
        text_cache_batch_size: paragraphs per LLM forward pass while building the cache.
    """

    def __init__(
        self,
        train_data: Dataset | None = None,
        val_data: Dataset | None = None,
        test_data: Dataset | None = None,
        predict_data: Dataset | None = None,
        source: Source | None = None,
        train_path: str | None = None,
        n_train: int | None = None,
        n_val: int | None = None,
        n_test: int | None = None,
        n_predict: int | None = None,
        resolution: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: str | None = None,
        max_length: int | None = None,
        text_cache: str | None = None,
        text_cache_rebuild: bool = False,
        text_cache_batch_size: int = 16,
    ):
        super().__init__()
        # datasets are objects, not settings: LightningCLI's config.yaml records them; checkpoints must not pickle them
        self.save_hyperparameters(ignore=list(_DATASETS))
        self.train_data, self.val_data, self.test_data, self.predict_data = train_data, val_data, test_data, predict_data
        self.source, self.train_path = source, train_path
        self.n_train, self.n_val, self.n_test, self.n_predict = n_train, n_val, n_test, n_predict
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.tokenizer_path, self.max_length = tokenizer, max_length
        self.collator: ParagraphCollator | None = None
        self._train_layout: StreamBatches | None = None  # what the last train_dataset() built, for the loader
        if source is not None and train_data is not None:
            raise ValueError(f"data.source={source!r} and data.train_data both name the training pairs; keep one")
        if source is not None and not train_path:
            raise ValueError(f"data.source={source!r} needs data.train_path")
        if train_path and source is None:
            raise ValueError("data.train_path needs data.source (manifest, webdataset or folder)")
        for field, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("n_predict", n_predict)):
            if n is not None and n < 0:
                raise ValueError(f"data.{field}={n}: expected a count >= 0, or null for the whole dataset")
        found = {name: r for name in _DATASETS if (r := _resolution_of(getattr(self, name))) is not None}
        if resolution is not None:
            found = {"resolution": int(resolution), **found}
        if len(set(found.values())) > 1:
            raise ValueError("data: the datasets disagree on the image resolution: "
                             + ", ".join(f"{k}={v}" for k, v in found.items()))
        self.resolution = next(iter(found.values()), None)
        if source is not None and self.resolution is None:
            raise ValueError(f"data.source={source!r} needs data.resolution")
        self.text_cache, self.text_cache_rebuild = text_cache, text_cache_rebuild
        self.text_cache_batch_size = text_cache_batch_size
        streams = isinstance(train_data, IterableDataset) or source == "webdataset"
        if text_cache is not None and streams and n_train is None:
            raise ValueError("data.text_cache needs a finite training set: set data.n_train (the training data is a "
                             "stream without end, and states are computed before training)")

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
        texts = dataset_texts(self.train_dataset())
        if self.val_data is not None:
            texts += dataset_texts(self._eval_dataset("val"))
        device = next(encoder.parameters()).device
        was_training = encoder.training
        added = cache.build(texts, encoder.tokenize, encoder.encode_prefix, self.text_cache_batch_size, device=device)
        encoder.train(was_training)
        log.info("text cache %s: %d paragraphs cached (%d new)", cache.root, len(cache), added)
        return cache

    def setup(self, stage: str | None = None) -> None:
        self.collator = self._make_collator()

    def _rank_and_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def _source_dataset(self) -> Dataset:
        if self.source == "manifest":
            return ManifestDataset(self.train_path, self.resolution)
        if self.source == "folder":
            return ImageFolder(self.train_path, self.resolution)
        return WebDatasetSource(self.train_path, self.resolution, repeat=True, seed=self.seed)

    def train_dataset(self) -> Dataset:
        """The training set this run reads: cut to ``n_train`` (a finite set: the loader reads it in shuffled epochs
        split over the ranks); a stream read by index, in this rank's batches (:class:`StreamBatches`; the loader
        positions it where training stands); or a stream without ``item_at`` positioned at the restored step by its
        ``resume`` and split over the ranks."""
        self._train_layout = None
        data = self.train_data if self.train_data is not None else (self._source_dataset() if self.source else None)
        if data is None:
            raise ValueError("data: no training data: set data.train_data (a dataset's class_path and init_args) "
                             "or data.source and data.train_path")
        if self.n_train is not None:
            return take(data, self.n_train, "data.n_train")
        if isinstance(data, IterableDataset) and callable(getattr(data, "item_at", None)):
            rank, world = self._rank_and_world()
            self._train_layout = StreamBatches(data, self.batch_size, rank, world)
            return self._train_layout
        if isinstance(data, IterableDataset) and hasattr(data, "resume"):
            rank, world = self._rank_and_world()
            return data.resume(step=self.trainer.global_step if self.trainer else 0, rank=rank, world_size=world)
        return data

    def _trained_batches(self) -> int | None:
        """The training batches this run has consumed (restored with the loop state on resume), while fitting."""
        from lightning.pytorch.trainer.states import TrainerFn

        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return None
        return trainer.fit_loop.epoch_loop.batch_progress.total.ready

    def _loader(self, dataset: Dataset, layout: EpochBatches | StreamBatches | None = None) -> DataLoader:
        """A DataLoader in this DataModule's settings, in order (training order is the layout's, or the stream's);
        with a batch layout, one that starts where training stands (`ResumableLoader`)."""
        if self.collator is None:
            self.setup()
        kwargs = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collator,
            persistent_workers=self.num_workers > 0,
            # A loader draws its workers' base seed from its own generator: from the global one, every validation
            # would shift the noise and timesteps of all later training steps, and a resumed run would draw
            # differently from the uninterrupted one.
            generator=torch.Generator().manual_seed(self.seed),
        )
        if layout is None:
            return DataLoader(dataset, **kwargs)
        return ResumableLoader(dataset, layout, progress=self._trained_batches, **kwargs)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()  # may be a subclass's wrapper around the layout it built
        layout = self._train_layout
        if layout is None and not isinstance(dataset, IterableDataset):  # a finite set: shuffled epochs
            rank, world = self._rank_and_world()
            layout = dataset = EpochBatches(dataset, self.batch_size, rank, world, seed=self.seed, shuffle=True)
        return self._loader(dataset, layout)  # without a layout: a stream that cannot be read by index, as it comes

    def _eval_dataset(self, which: str) -> Dataset:
        data, n = {"val": (self.val_data, self.n_val), "test": (self.test_data, self.n_test),
                   "predict": (self.predict_data, self.n_predict)}[which]
        if data is None:
            raise ValueError(f"data: no {which} data: set data.{which}_data (a dataset's class_path and init_args)")
        return data if n is None else take(data, n, f"data.n_{which}")

    def val_dataloader(self) -> DataLoader | list:
        if self.val_data is None:
            return []  # no validation
        return self._loader(self._eval_dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._eval_dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._eval_dataset("predict"))


class Stage1PretrainData(ImageTextDataModule):
    """Stage 1 -- large-scale pre-training on short captions (the LAION alt-text analog)."""


class Stage2AlignmentData(ImageTextDataModule):
    """Stage 2 -- paragraph-image alignment on long paragraphs (the ParaImage-Big analog)."""


class Stage3QualityData(ImageTextDataModule):
    """Stage 3 -- quality tuning on a small curated set (the ParaImage-Small analog: 3.1k in the paper)."""
