"""Noise-schedule / loss identities, guidance and sampler determinism (no models; milliseconds)."""
import pytest
import torch
from diffusers import DDPMScheduler

from paradiffusion.diffusion.guidance import classifier_free_guidance, pad_context
from paradiffusion.diffusion.sampling import initial_noise, make_sampler, sample_loop
from paradiffusion.diffusion.schedule import diffusion_loss, loss_weights, predict_x0_eps, snr, training_target


def _sched(kind: str) -> DDPMScheduler:
    return DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=kind, clip_sample=False)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_target_and_inversion_identities(kind):
    s = _sched(kind)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    x_t = s.add_noise(x0, eps, t)
    target = training_target(s, x0, eps, t)
    if kind == "v_prediction":  # agrees with diffusers' own definition of v
        torch.testing.assert_close(target, s.get_velocity(x0, eps, t), atol=1e-5, rtol=1e-5)
    x0_hat, eps_hat = predict_x0_eps(s, target, x_t, t)  # a perfect prediction recovers x0 and ε
    torch.testing.assert_close(x0_hat, x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(eps_hat, eps, atol=2e-3, rtol=1e-3)


def test_min_snr_weights():
    t = torch.arange(0, 1000, 37)
    for kind in ["epsilon", "v_prediction"]:
        s = _sched(kind)
        r = snr(s, t)
        w = loss_weights(s, t, 5.0)
        expected = torch.minimum(r, torch.tensor(5.0)) / (r if kind == "epsilon" else r + 1)
        torch.testing.assert_close(w, expected)
        assert (w <= 1 + 1e-6).all() and (w > 0).all()
        # high-noise steps (SNR < γ) keep full ε-weight; low-noise steps are down-weighted
        if kind == "epsilon":
            assert torch.allclose(w[r < 5], torch.ones_like(w[r < 5]))
    assert torch.equal(loss_weights(_sched("epsilon"), t, None), torch.ones(len(t)))
    # min(SNR, γ)/(SNR+1) = [min(SNR, γ)/SNR] · SNR/(SNR+1)
    s_eps, s_v = _sched("epsilon"), _sched("v_prediction")
    torch.testing.assert_close(loss_weights(s_v, t, 5.0), loss_weights(s_eps, t, 5.0) * snr(s_eps, t) / (snr(s_eps, t) + 1))


def test_snr_floor_lifts_high_noise_weights():
    s, t = _sched("v_prediction"), torch.arange(0, 1000, 37)
    r = snr(s, t)
    w0, w = loss_weights(s, t, 5.0), loss_weights(s, t, 5.0, snr_floor=0.3)
    torch.testing.assert_close(w, r.clamp(0.3, 5.0) / (r + 1))
    assert torch.equal(w[r >= 0.3], w0[r >= 0.3])  # unchanged where SNR is above the floor
    assert (w[r < 0.3] > w0[r < 0.3]).all() and (w[t >= 900] > 0.25).all()  # v-weight ≥ 0.3/(SNR+1) at high noise
    with pytest.raises(ValueError, match="snr_floor"):
        loss_weights(s, t, 5.0, snr_floor=6.0)


def test_weighted_loss_reduces_to_mse():
    p, y = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(diffusion_loss(p, y, torch.ones(4)), torch.nn.functional.mse_loss(p, y))


def test_cfg_scale_one_is_conditional():
    u, c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.equal(classifier_free_guidance(u, c, 1.0), c)
    torch.testing.assert_close(classifier_free_guidance(u, c, 0.0), u)
    torch.testing.assert_close(classifier_free_guidance(u, c, 3.0), u + 3 * (c - u))


def test_pad_context():
    h, m = torch.randn(2, 3, 5), torch.ones(2, 3, dtype=torch.long)
    h2, m2 = pad_context(h, m, 7)
    assert h2.shape == (2, 7, 5) and m2[:, 3:].sum() == 0 and torch.equal(h2[:, :3], h)


@pytest.mark.parametrize("name", ["dpm", "ddim"])
def test_sampler_determinism_per_seed(name):
    s = _sched("v_prediction")
    s.register_to_config(timestep_spacing="trailing")
    denoise = lambda x, t: 0.1 * x  # noqa: E731 - a fixed toy denoiser
    a = sample_loop(denoise, make_sampler(name, s), initial_noise((3, 8, 8), [1, 2], torch.device("cpu"), torch.float32), 10)
    b = sample_loop(denoise, make_sampler(name, s), initial_noise((3, 8, 8), [1, 2], torch.device("cpu"), torch.float32), 10)
    c = sample_loop(denoise, make_sampler(name, s), initial_noise((3, 8, 8), [2], torch.device("cpu"), torch.float32), 10)
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:], c)  # image depends on its own seed only
    assert not torch.allclose(a[0], a[1])


def test_pooled_text_ignores_padding_and_reaches_the_unet():
    from paradiffusion.diffusion.conditioning import pooled_text, unet_forward
    from paradiffusion.diffusion.guidance import pad_context
    from fixtures import tiny_unet

    torch.manual_seed(0)
    ctx, mask = torch.randn(2, 5, 48), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    torch.testing.assert_close(pooled_text(ctx, mask)[0], ctx[0, :3].mean(0))
    padded, padded_mask = pad_context(ctx, mask, 9)  # (2, 9, 48): what batching with a longer paragraph does
    torch.testing.assert_close(pooled_text(padded, padded_mask), pooled_text(ctx, mask))
    unet = tiny_unet(cross_attention_dim=48, pooled_text=True).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([900, 100])
    with torch.no_grad():
        out = unet_forward(unet, x, t, ctx, mask)
        torch.testing.assert_close(unet_forward(unet, x, t, padded, padded_mask), out, atol=1e-5, rtol=1e-5)
        # the pooled vector is an input of its own: zeroing the projection changes the output
        unet.class_embedding.linear_2.weight.zero_()
        unet.class_embedding.linear_2.bias.zero_()
        assert (unet_forward(unet, x, t, ctx, mask) - out).abs().max() > 1e-4


def test_coordinate_channels_reach_the_unet():
    from paradiffusion.diffusion.conditioning import coordinate_channels, unet_forward
    from fixtures import tiny_unet

    grid = coordinate_channels(torch.zeros(2, 3, 4, 6))  # (2, 2, 4, 6)
    assert grid.shape == (2, 2, 4, 6)
    torch.testing.assert_close(grid[0, 0, 0], torch.linspace(-5 / 6, 5 / 6, 6))  # x runs along the width
    torch.testing.assert_close(grid[0, 1, :, 0], torch.linspace(-3 / 4, 3 / 4, 4))  # y runs down the height
    torch.manual_seed(0)
    unet = tiny_unet(cross_attention_dim=48, coordinates=True).eval()
    ctx, mask = torch.randn(2, 5, 48), torch.ones(2, 5)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([900, 100])
    with torch.no_grad():
        out = unet_forward(unet, x, t, ctx, mask)
        assert out.shape == (2, 3, 16, 16)
        # the coordinates are an input of their own: a flipped grid gives another output
        flipped = unet(torch.cat([x, coordinate_channels(x).flip(-1)], 1), t, encoder_hidden_states=ctx,
                       encoder_attention_mask=mask).sample
        assert (flipped - out).abs().max() > 1e-4
    with pytest.raises(ValueError, match="input channels"):
        unet_forward(tiny_unet(cross_attention_dim=48, channels=3), torch.randn(1, 4, 16, 16), t[:1], ctx[:1], mask[:1])
