"""Every YAML under experiments/ parses with the CLI's parser, composed as the README says (base + model + stage).

Parsing checks types and class paths without building anything, so the 7B and GPU configs are checked here too.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from paradiffusion.cli import ParaDiffusionCLI

EXP = Path(__file__).resolve().parents[1] / "experiments"
SCALES = ("tiny", "smollm2", "llama2-7b")


def compositions() -> list[list[Path]]:
    combos = [[EXP / "tiny" / "stage0_lm.yaml"]]
    for scale in SCALES:
        for stage in sorted((EXP / scale).glob("stage[123].yaml")):
            combos.append([EXP / "base.yaml", EXP / "model" / f"{scale}.yaml", stage])
    stage2 = EXP / "llama2-7b" / "stage2.yaml"
    combos.append([EXP / "base.yaml", EXP / "model" / "llama2-7b.yaml", stage2, EXP / "llama2-7b" / "zero3_offload.yaml"])
    for ablation in ("attn_lora.yaml", "lm_full_finetune.yaml", "token_gate.yaml", "refiner.yaml", "embedding_skip.yaml",
                     "lora_top.yaml", "scratch_lm.yaml", "tokens77.yaml", "coords.yaml",
                     "sentence_context.yaml"):
        combos.append([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage2.yaml", EXP / "tiny" / ablation])
    # stage-3-only arms (scripts/demo.py --stage-config stage3:FILE)
    combos.append([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage3.yaml",
                   EXP / "tiny" / "stage3_gentle.yaml"])
    combos.append([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage3.yaml",
                   EXP / "tiny" / "stage3_plain.yaml"])
    return combos


class _ParseOnly(ParaDiffusionCLI):
    """The real CLI parser; stops before instantiating anything (no weights needed)."""

    def before_instantiate_classes(self) -> None:
        raise _Parsed(self.config)


class _Parsed(Exception):
    def __init__(self, config):
        self.config = config


def parse(files: list[Path]):
    args = ["fit"]
    for f in files:
        args += ["--config", str(f)]
    with pytest.raises(_Parsed) as info:
        _ParseOnly(args=args)
    return info.value.config.fit


def test_every_yaml_is_covered():
    covered = {f for combo in compositions() for f in combo}
    every = set(EXP.rglob("*.yaml"))
    assert every - covered == set(), f"YAML files not parsed by any test: {sorted(every - covered)}"


@pytest.mark.parametrize("files", compositions(), ids=lambda fs: "+".join(f.stem for f in fs))
def test_config_parses(files):
    cfg = parse(files)
    assert cfg.model.class_path
    assert cfg.data.class_path
    assert cfg.trainer.max_steps > 0
    if files[-1].parent.name in SCALES and files[-1].stem in ("stage2", "stage3"):
        prev = f"stage{int(files[-1].stem[-1]) - 1}"
        assert prev in cfg.model.init_args.init_from, "each stage starts from the previous stage's weights"
    if "llama2-7b" in str(files[-1]):
        assert cfg.trainer.strategy.class_path.endswith("DeepSpeedStrategy")
        assert cfg.trainer.precision == "bf16-mixed"
    if files[-1].name == "zero3_offload.yaml":
        assert cfg.trainer.strategy.init_args.stage == 3


# diffusers' UNet2DConditionModel reads `attention_head_dim` as the NUMBER of heads (a historical naming quirk), so
# `attention_head_dim: 32` on 128 channels silently builds 32 heads of 4 dimensions, with which cross-attention
# can barely select a token: the tiny model then ignored its paragraphs (loss with true vs shuffled text within 1%).
MIN_HEAD_DIM = 16


@pytest.mark.parametrize("scale", SCALES)
def test_unet_attention_heads_are_wide_enough(scale):
    unet = parse([EXP / "base.yaml", EXP / "model" / f"{scale}.yaml", EXP / scale / "stage1.yaml"]).model.init_args.unet
    args = unet.init_args
    channels = list(args.block_out_channels)
    heads = args.attention_head_dim
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    for block, (kind, c, h) in enumerate(zip(args.down_block_types, channels, heads)):
        if "CrossAttn" in kind:
            assert c % h == 0 and c // h >= MIN_HEAD_DIM, (
                f"experiments/model/{scale}.yaml: down block {block} has {c} channels and attention_head_dim={h} "
                f"(= number of heads in diffusers) -> head dim {c // h}; use fewer heads")


def test_tiny_lora_arms_keep_the_paper_recipe():
    tiny = parse([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage2.yaml"]).model.init_args
    assert tiny.lora_lr == tiny.unet_lr and tiny.text_encoder.init_args.freeze  # frozen + cached by default
    top = parse([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage2.yaml",
                 EXP / "tiny" / "lora_top.yaml"]).model.init_args.text_encoder.init_args
    assert top.freeze is False and top.trainable_blocks == 1
    attn = parse([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage2.yaml",
                  EXP / "tiny" / "attn_lora.yaml"]).model.init_args
    assert attn.lora_lr == 1e-4 and attn.unet_lr == tiny.unet_lr
    assert list(attn.text_encoder.init_args.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_lm_full_finetune_drops_lora_and_unfreezes_the_lm():
    te = parse([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage2.yaml",
                EXP / "tiny" / "lm_full_finetune.yaml"]).model.init_args.text_encoder.init_args
    assert te.lora is None and te.freeze is False


@pytest.mark.parametrize("name", ["token_gate", "refiner"])
def test_connector_configs_match_the_text_width(name):
    model = parse([EXP / "base.yaml", EXP / "model" / "tiny.yaml", EXP / "tiny" / "stage2.yaml",
                   EXP / "tiny" / f"{name}.yaml"]).model.init_args
    connector = model.text_encoder.init_args.connector
    assert connector.class_path.startswith("paradiffusion.models.")
    assert connector.init_args.dim == model.text_encoder.init_args.out_dim == model.unet.init_args.cross_attention_dim


@pytest.mark.parametrize("scale", SCALES)
def test_stages_wire_their_datasets_and_the_benchmark_by_class_path(scale):
    """The library names no benchmark: the stage configs inject the datasets (ParaShapes scenes unless the scale
    trains on its own shards / manifests) and base.yaml the ParaShapes callbacks, at the scale's resolution."""
    for stage in (1, 2, 3):
        cfg = parse([EXP / "base.yaml", EXP / "model" / f"{scale}.yaml", EXP / scale / f"stage{stage}.yaml"])
        data = cfg.data.init_args
        assert cfg.data.class_path.startswith("paradiffusion.data.Stage")
        if data.source is None:
            assert data.train_data.class_path == "parashapes.ParaShapesIterable"
            assert data.train_data.init_args.split == f"stage{stage}"
        else:
            assert data.train_data is None and data.train_path
        splits = {k: (data[k].class_path, data[k].init_args.split) for k in ("val_data", "test_data", "predict_data")}
        assert splits == {"val_data": ("parashapes.ParaShapesDataset", "val"),
                          "test_data": ("parashapes.ParaShapesDataset", "test"),
                          "predict_data": ("parashapes.ParaShapesDataset", "heldout")}
        resolutions = {data[k].init_args.resolution for k in ("train_data", "val_data", "test_data", "predict_data")
                       if data[k] is not None} | ({data.resolution} if data.resolution else set())
        assert len(resolutions) == 1, resolutions
        callbacks = [c.class_path for c in cfg.trainer.callbacks]
        assert {"parashapes.callbacks.SampleAndScore", "parashapes.callbacks.TestScore"} <= set(callbacks)
    lm = parse([EXP / "tiny" / "stage0_lm.yaml"]).data.init_args
    assert [s.class_path for s in lm.sources] == ["parashapes.lm.ParaShapesText"]
