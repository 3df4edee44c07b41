"""ParaDiffusion LightningModule: a tiny model trains and samples on CPU through a Lightning Trainer;
EMA is saved/restored; stage chaining with init_from; parameter groups."""
import lightning as L
import pytest
import torch
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader

from paradiffusion.models import LLMTextEncoder, LoRASettings, TextRefiner, TokenGate
from fixtures import build_tiny_tokenizer, tiny_llama_config, tiny_unet
from paradiffusion.module import ParaDiffusion
from paradiffusion.pipeline import drop_captions

COLORS = {"red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0), "green": (0.0, 1.0, 0.0)}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return str(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def make_module(tok_dir, connector=None, embedding_skip=False, **kw) -> ParaDiffusion:
    torch.manual_seed(0)
    enc = LLMTextEncoder(llama_config=tiny_llama_config(), tokenizer=tok_dir, lora=LoRASettings(r=4), out_dim=32,
                         connector=connector, embedding_skip=embedding_skip)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False,
                          timestep_spacing="trailing")
    defaults = dict(unet_lr=1e-3, lora_lr=1e-4, warmup_steps=2, ema_decay=0.9, sample_steps=4)
    return ParaDiffusion(enc, tiny_unet(cross_attention_dim=32), sched, **(defaults | kw))


def loader(module: ParaDiffusion, n: int = 16, batch_size: int = 8) -> DataLoader:
    """Follows the batch contract: pixel_values in [-1, 1], dynamic-padded input_ids / attention_mask, text, id."""
    items = []
    for i in range(n):
        color = list(COLORS)[i % 3]
        img = torch.ones(3, 16, 16) * 0.5
        img[:, 4:12, 4:12] = torch.tensor(COLORS[color]).view(3, 1, 1)
        items.append({"id": str(i), "text": f"a {color} square in the center of a gray background", "image": img})

    def collate(batch):
        tok = module.text_encoder.tokenize([b["text"] for b in batch])
        return {"pixel_values": torch.stack([2 * b["image"] - 1 for b in batch]), **tok,
                "text": [b["text"] for b in batch], "id": [b["id"] for b in batch]}

    return DataLoader(items, batch_size=batch_size, collate_fn=collate)


def trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, gradient_clip_val=1.0, **kw)


def test_trains_samples_and_resumes(tok_dir, tmp_path):
    module = make_module(tok_dir)
    dl = loader(module)
    t = trainer(tmp_path, max_steps=6, enable_checkpointing=False, limit_val_batches=1, val_check_interval=3, check_val_every_n_epoch=None)
    module.configure_model()
    before = {k: v.detach().clone() for k, v in module.trainable_named_parameters().items()}
    t.fit(module, dl, dl)
    losses = t.callback_metrics
    assert torch.isfinite(losses["train/loss"]) and torch.isfinite(losses["val/loss"])
    assert "train/lr_unet" in losses and "train/lr_lora" in losses
    after = module.trainable_named_parameters()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("unet.") for k in changed) and any("lora_B" in k for k in changed)
    assert module.ema.num_updates == 6
    ema_w = dict(module.ema.shadow)
    assert not all(torch.equal(ema_w[k], after[k].float()) for k in ema_w)  # EMA differs from the raw weights

    images = module.make_pipeline()(["a red square in the center"] * 2, num_inference_steps=4, guidance_scale=2.0)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    # make_pipeline(use_ema=True) copies: the training weights are untouched
    assert all(torch.equal(after[k], module.trainable_named_parameters()[k]) for k in after)

    # test: sampling with EMA weights, logs test/loss (benchmark scores come from callbacks, see below)
    out = t.test(module, loader(module, n=4, batch_size=4), verbose=False)
    assert "test/loss" in out[0]

    # checkpoint → resume continues the EMA; the raw weights come back exactly
    ckpt = tmp_path / "last.ckpt"
    t.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["ema"]["num_updates"] == 6
    resumed = make_module(tok_dir)
    t2 = trainer(tmp_path, max_steps=8, enable_checkpointing=False, limit_val_batches=0)
    t2.fit(resumed, dl, ckpt_path=str(ckpt))
    assert resumed.ema.num_updates == 8

    # stage chaining: weights only (EMA weights by default), fresh optimizer
    nxt = make_module(tok_dir, init_from=str(ckpt))
    nxt.configure_model()
    for k, p in nxt.trainable_named_parameters().items():
        torch.testing.assert_close(p, saved["ema"]["shadow"][k])


def test_test_step_hands_its_images_to_callbacks_and_parashapes_scores_them(tok_dir, tmp_path):
    """The module draws; a callback named in the config judges (`parashapes.callbacks.TestScore`, in base.yaml):
    the library itself names no benchmark."""
    from parashapes import ParaShapesDataset
    from parashapes.callbacks import TestScore

    module = make_module(tok_dir)

    def collate(batch):
        tok = module.text_encoder.tokenize([b["text"] for b in batch])
        return {"pixel_values": torch.stack([2 * b["image"] - 1 for b in batch]), **tok,
                "text": [b["text"] for b in batch], "id": [b["id"] for b in batch], "spec": [b["spec"] for b in batch]}

    seen = []

    class Spy(L.Callback):
        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            seen.append(tuple(outputs["images"].shape))

    t = trainer(tmp_path, callbacks=[TestScore(), Spy()])
    out = t.test(module, DataLoader(ParaShapesDataset("test", 4, 32), batch_size=2, collate_fn=collate),
                 verbose=False)[0]
    assert seen == [(2, 3, 16, 16)] * 2  # the model's samples (its UNet draws 16 px)
    assert 0.0 <= out["test/object_exact"] <= 1.0 and "test/presence" in out and "test/loss" in out
    out = trainer(tmp_path).test(module, DataLoader(ParaShapesDataset("test", 2, 32), batch_size=2, collate_fn=collate),
                                 verbose=False)[0]
    assert "test/object_exact" not in out  # no scoring callback: the module only draws


@pytest.mark.parametrize("kind", ["gate", "refiner", "embedding_skip"])
def test_a_stage_can_add_a_connector_to_loaded_weights(tok_dir, tmp_path, kind):
    prev = make_module(tok_dir)
    prev.configure_model()
    with torch.no_grad():  # a trained-looking LoRA, so the comparison below is not trivially zero
        for n, p in prev.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    ckpt = tmp_path / "prev.ckpt"
    torch.save({"state_dict": prev.state_dict()}, ckpt)
    connector = {"gate": TokenGate(32), "refiner": TextRefiner(32, num_heads=4), "embedding_skip": None}[kind]
    nxt = make_module(tok_dir, connector=connector, embedding_skip=kind == "embedding_skip", init_from=str(ckpt))
    nxt.configure_model()  # the new weights are allowed, because they start as the identity
    prefix = "text_encoder.embedding_skip." if kind == "embedding_skip" else "text_encoder.connector."
    assert any(n.startswith(prefix) for n in nxt.trainable_named_parameters())
    tok = prev.text_encoder.tokenize(["a red square", "a blue square at the top of a white background"])
    with torch.no_grad():
        h_prev, _ = prev.text_encoder(tok["input_ids"], tok["attention_mask"])
        h_next, _ = nxt.text_encoder(tok["input_ids"], tok["attention_mask"])
    torch.testing.assert_close(h_next, h_prev, atol=0, rtol=0)
    module = make_module(tok_dir, connector=TokenGate(32), embedding_skip=True)
    module.configure_model()
    module.trainer = None
    groups = {g["name"]: g for g in module.configure_optimizers()["optimizer"].param_groups}
    unet_ids = {id(p) for p in groups["unet"]["params"]}
    extra = [*module.text_encoder.connector.parameters(), *module.text_encoder.embedding_skip.parameters()]
    assert all(id(p) in unet_ids for p in extra)  # trained at the UNet's rate


def test_param_groups_and_caption_dropout(tok_dir, tmp_path):
    module = make_module(tok_dir, unet_lr=1e-4, lora_lr=5e-6)
    module.configure_model()
    module.trainer = None  # not attached: configure_optimizers only needs hparams for a constant schedule
    opt = module.configure_optimizers()["optimizer"]
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["lora"]["initial_lr"] == 5e-6 and by_name["unet"]["initial_lr"] == 1e-4  # before warm-up
    n_lora = sum(p.numel() for p in by_name["lora"]["params"])
    assert n_lora == sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
    tok = module.text_encoder.tokenize(["a red square", "a blue square at the top"])
    ids, mask, _ = drop_captions(module.text_encoder, tok["input_ids"], tok["attention_mask"], p=1.0)
    empty = module.text_encoder.tokenize([""])
    assert torch.equal(mask.sum(1), torch.tensor([1, 1])) and (ids[:, 0] == empty["input_ids"][0, 0]).all()


@pytest.mark.slow  # ~2 min on 2 cores
def test_overfit_probe_learns_captions_with_uniform_loss(tmp_path, monkeypatch):
    """The text path works end to end through the real CLI: overfitting 8 caption/image pairs with a uniform
    v-loss, the model's loss with its own captions falls well below the loss with another pair's caption."""
    import importlib.util

    from helpers import REPO, random_lm_dir

    spec = importlib.util.spec_from_file_location("overfit", REPO / "scripts" / "overfit_text_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    monkeypatch.chdir(REPO)
    lm = random_lm_dir(tmp_path / "lm", hidden_size=256)
    out = probe.overfit_text_probe(str(lm), steps=300, extra=["--model.init_args.min_snr_gamma=null"])
    assert out["shuffled_over_true"] > 1.2, out


def test_validating_does_not_change_what_training_draws(tok_dir, tmp_path):
    """Two runs that differ only in validating every 2 steps or never end with the same weights: validation (its
    loader, its samples) draws nothing from the global random streams the training steps use."""
    from paradiffusion.data.stages import Stage2AlignmentData
    from parashapes import ParaShapesDataset, ParaShapesIterable

    weights = []
    for validate in (True, False):
        L.seed_everything(0)
        module = make_module(tok_dir)
        data = Stage2AlignmentData(train_data=ParaShapesIterable("stage2", 32), val_data=ParaShapesDataset("val", 4, 32),
                                   tokenizer=str(tok_dir), batch_size=4)
        t = trainer(tmp_path / str(validate), max_steps=5, enable_checkpointing=False, num_sanity_val_steps=0,
                    check_val_every_n_epoch=None, val_check_interval=2, limit_val_batches=1 if validate else 0)
        t.fit(module, datamodule=data)
        assert t.global_step == 5
        weights.append({k: v.detach().clone() for k, v in module.trainable_named_parameters().items()})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
