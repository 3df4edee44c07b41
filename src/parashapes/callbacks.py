"""ParaShapes scoring during training and testing, as Lightning callbacks named in the configs
(``experiments/base.yaml`` lists them under ``trainer.callbacks``).

* :class:`SampleAndScore`: after each validation, draw fixed ParaShapes paragraphs with the EMA weights, log the
  judge's scores (``val/<metric>``), the text-use probe (``val/text_use``), an image grid and the paragraphs.
* :class:`TestScore`: during ``test``, judge the images the model's ``test_step`` draws (its ``outputs["images"]``)
  against the batches' specs; logs ``test/<metric>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from paradiffusion.evaluate import SamplingSettings, make_grid, sample, to_pil

from .evaluate import score, text_dependence
from .metric import HEADLINE


def _train_split(datamodule: Any) -> str | None:
    """The ParaShapes split a datamodule trains on, when its training data is a ParaShapes dataset."""
    from .dataset import ParaShapesDataset, ParaShapesIterable

    data = getattr(datamodule, "train_data", None)
    return data.split if isinstance(data, (ParaShapesDataset, ParaShapesIterable)) else None


class SampleAndScore(Callback):
    """After each validation: draw images for fixed ParaShapes paragraphs, log a grid + the paragraphs to
    TensorBoard, write them under ``<log_dir>/samples/``, and log the faithfulness metrics as ``val/<key>``.

    The paragraphs and seeds are the same at every validation, so the grids form a visual learning curve. Every
    rank computes the same numbers (same paragraphs, same seeds), so logged values agree across DDP ranks without
    a gather.

    With ``text_use_n > 0`` it also logs ``val/text_use``: the denoising loss with shuffled paragraphs over the loss
    with the true ones on ``text_use_n`` ``split`` images (see :func:`parashapes.evaluate.text_dependence`; 1.00 =
    the model ignores its text), and ``val/text_use_<train split>`` on the text style the stage trains on when the
    datamodule's ``train_data`` is a ParaShapes split whose writer differs (stage-1 captions, stage-3 curated
    paragraphs). The attribute scores alone cannot tell a model that reads its text from one that draws plausible
    shapes from its prior.
    """

    def __init__(
        self,
        split: str = "val",
        n: int = 16,
        seed: int = 1234,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        sampler: str = "dpm",
        use_ema: bool = True,
        every_n_validations: int = 1,
        text_use_n: int = 64,
    ):
        self.split, self.n, self.seed, self.use_ema = split, n, seed, use_ema
        self.text_use_n = text_use_n
        self.settings = SamplingSettings(num_inference_steps, guidance_scale, sampler, batch_size=n)
        self.every_n_validations = every_n_validations
        self._validations = 0
        self._specs = None

    def _fixed_specs(self):
        if self._specs is None:
            from .generate import generate_split

            self._specs = generate_split(self.split, self.n, seed=self.seed)
        return self._specs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations:
            return
        specs = self._fixed_specs()
        pipeline = pl_module.make_pipeline(use_ema=self.use_ema)
        images = sample(pipeline, [s.paragraph for s in specs], self.settings, seed=self.seed)  # (N, 3, R, R)
        scores = score(images, specs)
        headline = {f"val/{k}": scores[k] for k in HEADLINE if k in scores}
        headline.update(self._text_use(trainer, pl_module))
        pl_module.log_dict(headline, sync_dist=False)
        # `trainer.log_dir` is a collective under DDP (rank 0 broadcasts it): every rank must ask, not only rank 0.
        log_dir = trainer.log_dir or trainer.default_root_dir
        if trainer.is_global_zero:
            self._write(trainer, log_dir, images, specs, scores)

    def _text_use(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Shuffled/true denoising loss on the validation text style and, if different, the training one."""
        if self.text_use_n <= 0:
            return {}
        from .generate import SPLIT_WRITER

        splits = {self.split: "val/text_use"}
        train_split = _train_split(trainer.datamodule)
        # a second measurement only where the stage's text is written differently (stage-1 captions, stage-3 curated)
        if train_split in SPLIT_WRITER and SPLIT_WRITER[train_split] != SPLIT_WRITER.get(self.split):
            splits[train_split] = f"val/text_use_{train_split}"
        out = {}
        with torch.no_grad():  # the loaded weights are the EMA ones here (the module swaps them in for validation)
            for split, name in splits.items():
                out[name] = text_dependence(pl_module, split=split, n=self.text_use_n, seed=self.seed)["shuffled_over_true"]
        return out

    def _write(self, trainer: L.Trainer, log_dir: str, images: torch.Tensor, specs, scores: dict) -> None:
        grid = make_grid(images)  # (3, H', W')
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/samples", grid, step)
                text = "\n\n".join(f"**{i}** ({s.id}): {s.paragraph}" for i, s in enumerate(specs))
                logger.experiment.add_text("val/paragraphs", text, step)
        out = Path(log_dir) / "samples"
        out.mkdir(parents=True, exist_ok=True)
        to_pil(grid).save(out / f"step_{step:07d}.png")
        with (out / "scores.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **scores}) + "\n")


class TestScore(Callback):
    """During ``test``: the judge's scores of the images the model draws in ``test_step`` (``outputs["images"]``,
    ``(B, 3, H, W)`` in [0, 1]) against the batches' ``spec`` (ParaShapes test data carries them), logged as
    ``test/<metric>`` at the end of the epoch, synchronised across DDP ranks. Batches without specs are skipped."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._metric = None
        self._seen = False

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from .metric import ParaShapesScore

        # held here, never in the module tree: it must not enter state_dict / checkpoints
        self._metric, self._seen = ParaShapesScore().to(pl_module.device), False

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        images = outputs.get("images") if isinstance(outputs, dict) else None
        specs = batch.get("spec") if isinstance(batch, dict) else None
        if images is None or specs is None or self._metric is None:
            return
        self._metric.update(images.to(pl_module.device), specs)
        self._seen = True

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._metric is not None and self._seen:
            for key, value in self._metric.compute().items():
                pl_module.log(f"test/{key}", value)
        self._metric = None
