"""Training callbacks: sample fixed validation paragraphs with the EMA weights and score their faithfulness."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from paradiffusion.evaluate import SamplingSettings, make_grid, sample, score, text_dependence, to_pil

log = logging.getLogger(__name__)

HEADLINE = ("scene_exact", "object_exact", "presence", "position", "size", "shape", "background", "extra_objects")


class SampleAndScore(Callback):
    """After each validation: draw images for fixed ParaShapes paragraphs, log a grid + the paragraphs to
    TensorBoard, write them under ``<log_dir>/samples/``, and log the faithfulness metrics as ``val/<key>``.

    The paragraphs and seeds are the same at every validation, so the grids form a visual learning curve. Every
    rank computes the same numbers (same paragraphs, same seeds), so logged values agree across DDP ranks without
    a gather.

    With ``oracle_lists`` (default: whenever the model has a text rewriter and the datamodule trains on scene lists,
    ``data.train_text=scene_list``) it also draws the same scenes from their canonical scene lists, bypassing the
    rewriter, and logs ``val/oracle_<metric>``: what the model draws from a perfect restatement. The gap between
    ``val/<metric>`` and ``val/oracle_<metric>`` is the rewriter's share of the errors, the oracle score the UNet's.

    With ``text_use_n > 0`` it also logs ``val/text_use``: the denoising loss with shuffled paragraphs over the loss
    with the true ones on ``text_use_n`` ``split`` images (see :func:`paradiffusion.evaluate.text_dependence`;
    1.00 = the model ignores its text), and ``val/text_use_<train split>`` on the text style the stage trains on
    when its writer differs (stage-1 captions, stage-3 curated paragraphs). The attribute scores alone cannot tell a model that
    reads its text from one that draws plausible shapes from its prior.
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
        oracle_lists: bool | None = None,
    ):
        self.split, self.n, self.seed, self.use_ema = split, n, seed, use_ema
        self.oracle_lists = oracle_lists
        self.text_use_n = text_use_n
        self.settings = SamplingSettings(num_inference_steps, guidance_scale, sampler, batch_size=n)
        self.every_n_validations = every_n_validations
        self._validations = 0
        self._specs = None

    def _fixed_specs(self):
        if self._specs is None:
            from paradiffusion.parashapes import generate_split

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
        oracle = self._oracle_scores(pipeline, specs) if self._use_oracle_lists(trainer, pipeline) else {}
        headline.update({f"val/oracle_{k}": v for k, v in oracle.items() if k in HEADLINE})
        pl_module.log_dict(headline, sync_dist=False)
        # `trainer.log_dir` is a collective under DDP (rank 0 broadcasts it): every rank must ask, not only rank 0.
        log_dir = trainer.log_dir or trainer.default_root_dir
        restated = pipeline.restate([s.paragraph for s in specs]) if pipeline.text_rewriter is not None else None
        if trainer.is_global_zero:
            self._write(trainer, log_dir, images, specs, {**scores, **{f"oracle_{k}": v for k, v in oracle.items()}},
                        restated)

    def _use_oracle_lists(self, trainer: L.Trainer, pipeline) -> bool:
        if self.oracle_lists is not None:
            return self.oracle_lists
        return pipeline.text_rewriter is not None and getattr(trainer.datamodule, "train_text", None) == "scene_list"

    def _oracle_scores(self, pipeline, specs) -> dict[str, float]:
        """The same scenes and seeds drawn from their scene lists with no rewriter, scored."""
        from paradiffusion.parashapes.describe import scene_list

        rewriter, pipeline.text_rewriter = pipeline.text_rewriter, None
        try:
            images = sample(pipeline, [scene_list(s) for s in specs], self.settings, seed=self.seed)  # (N, 3, R, R)
        finally:
            pipeline.text_rewriter = rewriter
        return score(images, specs)

    def _text_use(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Shuffled/true denoising loss on the validation text style and, if different, the training one."""
        if self.text_use_n <= 0:
            return {}
        from paradiffusion.parashapes.generate import SPLIT_WRITER

        splits = {self.split: "val/text_use"}
        dm = trainer.datamodule
        train_split = getattr(dm, "train_split", None) if getattr(dm, "source", None) == "parashapes" else None
        # a second measurement only where the stage's text is written differently (stage-1 captions, stage-3 curated)
        if train_split in SPLIT_WRITER and SPLIT_WRITER[train_split] != SPLIT_WRITER.get(self.split):
            splits[train_split] = f"val/text_use_{train_split}"
        out = {}
        with torch.no_grad():  # the loaded weights are the EMA ones here (the module swaps them in for validation)
            for split, name in splits.items():
                out[name] = text_dependence(pl_module, split=split, n=self.text_use_n, seed=self.seed)["shuffled_over_true"]
        return out

    def _write(self, trainer: L.Trainer, log_dir: str, images: torch.Tensor, specs, scores: dict,
               restated: list[str] | None = None) -> None:
        grid = make_grid(images)  # (3, H', W')
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/samples", grid, step)
                text = "\n\n".join(f"**{i}** ({s.id}): {s.paragraph}"
                                     + (f"\n\n&rarr; *restated:* {restated[i]}" if restated else "")
                                     for i, s in enumerate(specs))
                logger.experiment.add_text("val/paragraphs", text, step)
        out = Path(log_dir) / "samples"
        out.mkdir(parents=True, exist_ok=True)
        to_pil(grid).save(out / f"step_{step:07d}.png")
        with (out / "scores.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **scores}) + "\n")


class ParameterChecksum(Callback):
    """At the end of fit, write a checksum of the trainable parameters of this rank to
    ``<dirpath>/param_checksum_rank<r>.json``: a cheap check that DDP/ZeRO ranks stayed in sync."""

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = [p.detach().double().cpu() for p in pl_module.parameters() if p.requires_grad]
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "num_tensors": len(params),
            "sum": float(sum(p.sum() for p in params)),
            "abs_sum": float(sum(p.abs().sum() for p in params)),
        }
        out = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"param_checksum_rank{trainer.global_rank}.json").write_text(json.dumps(record) + "\n")
