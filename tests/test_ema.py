"""The EMA of the trainable weights (`paradiffusion.ema`): swapping is exact, the `EMAWeights` callback that
`ParaDiffusion` brings to every run keeps the average in step with the weights (a checkpoint saved mid-run carries
the average of exactly the steps its weights have seen, so resume continues it), and validation neither changes the
average nor the random streams training draws from."""
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from paradiffusion.callbacks import TrainingLogs, ValidationRNGFence
from paradiffusion.ema import EMA, EMAWeights, prune_frozen

from test_model_module import loader, make_module, tok_dir, trainer  # noqa: F401  (tok_dir is a fixture)


def test_swap_in_and_out_is_exact_and_idempotent():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    named = dict(net.named_parameters())
    ema = EMA(named, decay=0.5)
    raw = {k: p.detach().clone() for k, p in named.items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(named)
    assert ema.num_updates == 1 and not ema.active
    after_step = {k: p.detach().clone() for k, p in named.items()}
    ema.swap_in(named)
    ema.swap_in(named)  # a second swap-in keeps the first backup
    assert ema.active and all(torch.equal(p, ema.shadow[k]) for k, p in named.items())
    assert not torch.equal(named["weight"], raw["weight"])
    ema.swap_out(named)
    ema.swap_out(named)
    assert not ema.active and all(torch.equal(p, after_step[k]) for k, p in named.items())
    with ema.swapped_in(named):
        assert torch.equal(named["bias"], ema.shadow["bias"])
    assert all(torch.equal(p, after_step[k]) for k, p in named.items())


def test_a_skipped_update_counts_nothing_and_only_once():
    net = nn.Linear(2, 2)
    named = dict(net.named_parameters())
    ema = EMA(named, decay=0.9)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.skip_next_update = True
    ema.update(named)
    assert ema.num_updates == 0 and all(torch.equal(before[k], ema.shadow[k]) for k in before)
    ema.update(named)
    assert ema.num_updates == 1 and not torch.equal(before["weight"], ema.shadow["weight"])


def test_state_dict_round_trip_and_missing_weights_are_refused():
    net = nn.Linear(2, 2)
    ema = EMA(dict(net.named_parameters()), decay=0.9)
    ema.num_updates = 7
    other = EMA(dict(nn.Linear(2, 2).named_parameters()), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 7 and all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    with pytest.raises(KeyError, match="EMA state lacks 1 weights"):
        other.load_state_dict({"num_updates": 1, "shadow": {"weight": ema.shadow["weight"]}})


def test_the_module_brings_its_callbacks_and_no_ema_means_none(tok_dir):
    kinds = {type(c) for c in make_module(tok_dir).configure_callbacks()}
    assert kinds == {ValidationRNGFence, EMAWeights, TrainingLogs}
    module = make_module(tok_dir, ema_decay=None)
    module.configure_model()
    assert module.ema is None
    module.load_ema_weights()  # a no-op
    pipe = module.make_pipeline(use_ema=True)
    assert pipe.unet is module.unet  # nothing to swap: the module's own parts


def test_mid_run_checkpoint_carries_the_average_of_its_steps_and_resume_continues_it(tok_dir, tmp_path):
    """A checkpoint written by ModelCheckpoint from its `on_train_batch_end` after step 3 holds the EMA of those 3
    updates (what its weights have seen), so a run resumed from it continues the average; the last one holds the
    module's final EMA."""
    seen = {}

    class AtStep3(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:  # as the 4th step starts: the EMA of the first 3
                seen["ema"] = {k: v.clone() for k, v in pl_module.ema.shadow.items()}
                seen["n"] = pl_module.ema.num_updates

    module = make_module(tok_dir)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, every_n_train_steps=3)
    t = trainer(tmp_path, max_steps=6, limit_val_batches=0, callbacks=[AtStep3(), ck])
    t.fit(module, loader(module, n=48, batch_size=8))
    saved = torch.load(tmp_path / "ck" / "epoch=0-step=3.ckpt", weights_only=True)
    assert saved["ema"]["num_updates"] == seen["n"] == 3
    assert all(torch.equal(saved["ema"]["shadow"][k], seen["ema"][k]) for k in seen["ema"])
    final = torch.load(tmp_path / "ck" / "epoch=0-step=6.ckpt", weights_only=True)
    assert final["ema"]["num_updates"] == module.ema.num_updates == 6
    assert all(torch.equal(final["ema"]["shadow"][k], module.ema.shadow[k].cpu()) for k in module.ema.shadow)


def test_validation_and_test_see_the_ema_and_leave_the_raw_weights(tok_dir, tmp_path):
    checks = []

    class Probe(Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            ema = pl_module.ema
            params = pl_module.trainable_named_parameters()
            checks.append(ema.active and all(torch.equal(p, ema.shadow[k].to(p.dtype)) for k, p in params.items()))
            shared = pl_module.make_pipeline(use_ema=True)
            raw = pl_module.make_pipeline(use_ema=False)
            checks.append(shared.unet is pl_module.unet and raw.unet is not pl_module.unet)
            raw_params = pl_module.trainable_named_parameters(root=nn.ModuleDict(
                {"text_encoder": raw.text_encoder, "unet": raw.unet}))
            checks.append(all(torch.equal(p, ema.raw[k]) for k, p in raw_params.items()))

    module = make_module(tok_dir)
    t = trainer(tmp_path, max_steps=2, limit_val_batches=1, val_check_interval=2, check_val_every_n_epoch=None,
                num_sanity_val_steps=0, enable_checkpointing=False, callbacks=[Probe()])
    t.fit(module, loader(module), loader(module, n=4))
    assert checks == [True, True, True] and not module.ema.active
    weights = {k: p.detach().clone() for k, p in module.trainable_named_parameters().items()}
    t.save_checkpoint(tmp_path / "a.ckpt")
    module.ema.swap_in(module.trainable_named_parameters())  # a save while the EMA is in keeps the raw weights
    t.save_checkpoint(tmp_path / "b.ckpt")
    module.ema.swap_out(module.trainable_named_parameters())
    a, b = (torch.load(tmp_path / f"{n}.ckpt", weights_only=True) for n in "ab")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert all(torch.equal(a["state_dict"][k], weights[k]) for k in weights)


def test_prune_frozen_keeps_only_trainable_weights():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net[0].requires_grad_(False)
    checkpoint = {"state_dict": dict(net.state_dict())}
    prune_frozen(net, checkpoint)
    assert set(checkpoint["state_dict"]) == {"1.weight", "1.bias"}


def test_the_rng_fence_restores_the_streams():
    fence = ValidationRNGFence()
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    fence.on_validation_start(None, None)
    torch.rand(5)
    fence.on_validation_end(None, None)
    assert torch.equal(torch.rand(2), expected)
