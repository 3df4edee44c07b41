"""experiments/tiny/stage0_lm.yaml builds through the LightningCLI the `paradiffusion` entry point uses."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from paradiffusion.lm.data import LMTextDataModule
from paradiffusion.lm.module import CausalLMPretrain
from parashapes.lm import ParaShapesText

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "tiny" / "stage0_lm.yaml"


def test_stage0_config_instantiates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's relative run paths land in tmp
    cli = LightningCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"}, run=False,
        args=["--config", str(CONFIG)],  # sources generate their text only when asked: building is cheap
    )  # fmt: skip
    assert isinstance(cli.model, CausalLMPretrain) and isinstance(cli.datamodule, LMTextDataModule)
    assert cli.model.hparams.hidden_size in (128, 256)  # the width the UNet's cross-attention is built for
    assert cli.model.hparams.export_dir == "runs/tiny/stage0/hf"
    (source,) = cli.datamodule.sources  # the benchmark's text, injected by class path
    assert isinstance(source, ParaShapesText) and source.n_per_split == 4000
    assert not {"heldout", "test"} & set(source.splits)
    assert cli.trainer.max_steps > 0
