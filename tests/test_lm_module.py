"""Stage-0 LM training and export: loss goes down; the HF directory loads offline and gives the same logits."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from paradiffusion.lm.data import LMTextDataModule
from paradiffusion.lm.export import export_hf
from paradiffusion.lm.module import CausalLMPretrain
from parashapes.lm import ParaShapesText

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
            max_position_embeddings=128, lr=3e-3, warmup_steps=5)  # fmt: skip
TEXTS = ["A small red circle sits in the top-left corner.", "Two blue squares share the very middle of a gray canvas."]


def val_loss(module: CausalLMPretrain, dm: LMTextDataModule) -> float:
    blocks = dm.val_set.blocks
    with torch.no_grad():
        return module.model(input_ids=blocks, labels=blocks).loss.item()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short fit: (module, datamodule, trainer, loss before, tmp dir)."""
    tmp = tmp_path_factory.mktemp("lm")
    L.seed_everything(0)
    dm = LMTextDataModule(sources=[ParaShapesText(n_per_split=60)], seq_len=64, batch_size=8, bpe_vocab_size=512)
    module = CausalLMPretrain(**TINY, export_dir=str(tmp / "hf"))
    trainer = L.Trainer(
        accelerator="cpu", max_steps=40, val_check_interval=20, limit_val_batches=2, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True)],
    )  # fmt: skip
    # Loss before training, on the model as configure_model builds it (same seed as inside fit).
    dm.setup()
    before_module = CausalLMPretrain(**TINY, vocab_size=len(dm.tokenizer))
    torch.manual_seed(0)
    before_module.configure_model()
    before = val_loss(before_module, dm)
    trainer.fit(module, datamodule=dm)
    return module, dm, trainer, before, tmp


def test_vocab_from_datamodule_and_loss_goes_down(run):
    module, dm, trainer, before, _ = run
    assert module.hparams.vocab_size == len(dm.tokenizer) == module.model.config.vocab_size
    after = val_loss(module, dm)
    assert after < before - 1.0, (before, after)
    logged = trainer.logged_metrics
    for key in ("train/loss", "train/ppl", "train/lr", "val/loss", "val/ppl", "val/unigram_ppl"):
        assert key in logged, key
    assert logged["val/ppl"] == pytest.approx(logged["val/loss"].exp().item(), rel=1e-5)


def assert_same_as_module(directory, module, dm):
    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    hf = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == dm.tokenizer(TEXTS, padding=True)["input_ids"]
    module.eval()
    with torch.no_grad():
        expected = module(batch["input_ids"], batch["attention_mask"])  # (B, T, V)
        got = hf(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_fit_end_export_loads_like_llama(run):
    module, dm, _, _, tmp = run
    names = {p.name for p in (tmp / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert_same_as_module(tmp / "hf", module, dm)
    # The text encoder loads the base model (no LM head), as it would from Llama-2-7b-hf.
    base = AutoModel.from_pretrained(tmp / "hf", local_files_only=True)
    hidden = base(**AutoTokenizer.from_pretrained(tmp / "hf")(TEXTS, padding=True, return_tensors="pt"))
    assert hidden.last_hidden_state.shape[-1] == TINY["hidden_size"]  # (B, T, D)


def test_export_from_checkpoint(run):
    module, dm, _, _, tmp = run
    out = export_hf(tmp / "ckpt" / "last.ckpt", tmp / "from_ckpt")
    assert_same_as_module(out, module, dm)
    # The checkpoint also reloads as a module on its own (vocab size and tokenizer travel in it).
    again = CausalLMPretrain.load_from_checkpoint(tmp / "ckpt" / "last.ckpt", weights_only=True)
    assert again.tokenizer(TEXTS)["input_ids"] == dm.tokenizer(TEXTS)["input_ids"]


def test_export_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        export_hf(tmp_path / "nope.ckpt", tmp_path / "out")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt.*not a CausalLMPretrain checkpoint"):
        export_hf(tmp_path / "other.ckpt", tmp_path / "out")
    with pytest.raises(RuntimeError, match="vocab_size unknown"):
        CausalLMPretrain(**TINY).configure_model()
    with pytest.raises(ValueError, match="not divisible"):
        CausalLMPretrain(hidden_size=30, num_attention_heads=4)
