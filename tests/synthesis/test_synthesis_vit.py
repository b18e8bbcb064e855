"""PSAQ-ViT synthesis: KDE entropy, similarities without B x P x P x d, hooks on timm/transformers attention."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from synq_hf import SynQConfig
from synq_hf.synthesis import generate_synthetic, synthesis_family
from synq_hf.synthesis._optim import GroupAdam, GroupWarmupCosine
from synq_hf.synthesis.augment import roll_jitter_flip
from synq_hf.synthesis.vit import (
    PSAQ_TV_NUMEL,
    PatchSimilarityObjective,
    _GaussianKDE,
    _reach,
    attention_modules,
    image_prior,
    jitter_limit,
    kde_entropy,
    patch_similarity,
    prefix_tokens,
    similarity_entropy,
)

DC = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_timm_vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=5, img_size=32, patch_size=8).eval()


def test_kde_matches_naive_density_and_gradcheck():
    s = torch.rand(2, 3, 7, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 4, dtype=torch.float64).expand(2, 3, 4).contiguous()
    h = 0.2
    naive = torch.exp(-(t[..., None, :] - s[..., :, None]).square() / (2 * h * h)).mean(-2) / (h * math.sqrt(2 * math.pi))
    torch.testing.assert_close(_GaussianKDE.apply(s, t, h), naive)
    assert torch.autograd.gradcheck(lambda x: _GaussianKDE.apply(x, t, h), (s,))


@pytest.mark.parametrize(("span", "reach"), [(2.0, 0), (0.6, 1), (0.25, 2), (0.05, None)])
def test_truncated_kde_matches_the_dense_sum_and_gradcheck(span: float, reach: int | None):
    """Bandwidth 0.01, 10 grid points: each sample visits only the grid points within the cutoff (``reach`` on
    each side of its nearest one; dense when that would be all of them); density and gradient are unchanged."""
    gen = torch.Generator().manual_seed(0)
    s = ((torch.rand(2, 3, 500, generator=gen, dtype=torch.float64) - 0.5) * span).requires_grad_(True)
    t = torch.linspace(-span / 2, span / 2, 10, dtype=torch.float64).expand(2, 3, 10).contiguous()
    h = 0.01
    assert _reach(t, h) == reach
    naive = torch.exp(-(t[..., None, :] - s[..., :, None]).square() / (2 * h * h)).mean(-2) / (h * math.sqrt(2 * math.pi))
    torch.testing.assert_close(_GaussianKDE.apply(s, t, h), naive, rtol=1e-7, atol=1e-10)
    grad = torch.randn(2, 3, 10, generator=gen, dtype=torch.float64)
    (g_fast,) = torch.autograd.grad((_GaussianKDE.apply(s, t, h) * grad).sum(), s)
    (g_naive,) = torch.autograd.grad((naive * grad).sum(), s)
    torch.testing.assert_close(g_fast, g_naive, rtol=1e-7, atol=1e-7)
    assert g_fast.abs().max() > 0
    assert torch.autograd.gradcheck(lambda x: _GaussianKDE.apply(x, t[:1, :1], h), (s[:1, :1, :40].detach().requires_grad_(),))


@pytest.mark.parametrize("span", [2.0, 0.3, 0.05])
def test_similarity_entropy_is_the_full_matrix_entropy(span: float):
    """Upper triangle twice + diagonal once: the density, entropy and gradient of all P x P entries."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2 * 3 * 2, 9, 4, generator=gen, dtype=torch.float64)  # G=2, B=3, W=2 windows, P=9
    unit = F.normalize(feats, dim=-1)
    sims = (1 - span / 2) + span / 2 * (unit @ unit.transpose(1, 2))  # symmetric, spanning ~span
    sims = sims.detach().requires_grad_(True)
    fast = similarity_entropy(sims.view(2, 3, 2, 9, 9), 0.01, 10)
    full = kde_entropy(sims.reshape(2, 3, -1), 0.01, 10)
    torch.testing.assert_close(fast, full, rtol=1e-9, atol=1e-9)
    w = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), sims)
    (g_full,) = torch.autograd.grad((full * w).sum(), sims)
    # the gradient of a pair lands on one of its two mirrored entries: compare the symmetrized gradients
    sym = lambda t: t + t.transpose(-1, -2)  # noqa: E731
    torch.testing.assert_close(sym(g_fast), sym(g_full), rtol=1e-7, atol=1e-9)


def test_truncated_kde_beyond_the_grid_edges_matches_the_dense_sum():
    """Samples outside the grid add only to the points within the cutoff, as the dense sum says."""
    gen = torch.Generator().manual_seed(1)
    s = ((torch.rand(1, 2, 300, generator=gen, dtype=torch.float64) - 0.5) * 1.6).requires_grad_(True)
    t = torch.linspace(-0.5, 0.5, 10, dtype=torch.float64).expand(1, 2, 10).contiguous()
    h = 0.02
    assert _reach(t, h) == 1
    naive = torch.exp(-(t[..., None, :] - s[..., :, None]).square() / (2 * h * h)).mean(-2) / (h * math.sqrt(2 * math.pi))
    torch.testing.assert_close(_GaussianKDE.apply(s, t, h), naive, rtol=1e-7, atol=1e-7)
    assert torch.autograd.gradcheck(lambda x: _GaussianKDE.apply(x, t, h), (s[..., :60].detach().requires_grad_(),))


def test_entropy_orders_spread_above_concentrated():
    spread = torch.linspace(-1, 1, 400).expand(1, 1, -1)
    peaked = (torch.randn(1, 1, 400) * 0.01).clamp(-1, 1)
    both = torch.cat([spread, peaked], 1)  # one group, two images; grid from the group's min/max
    ent = kde_entropy(both, bandwidth=0.01, num_points=50)
    assert ent.shape == (1, 2) and ent[0, 0] > ent[0, 1]


def test_patch_similarity_matches_pairwise_cosine():
    feats = torch.randn(3, 5, 8)  # 1 prefix token + 4 patches, 2 heads of 4 channels
    sims = patch_similarity(feats, heads=2, prefix=1)
    tokens = feats.unflatten(-1, (2, 4)).mean(-2)[:, 1:]
    naive = F.cosine_similarity(tokens.unsqueeze(1), tokens.unsqueeze(2), dim=-1)
    torch.testing.assert_close(sims, naive, atol=1e-5, rtol=0)


def test_timm_vit_hooks_keep_fused_attention():
    model = _tiny_timm_vit()
    blocks = attention_modules(model)
    assert len(blocks) == len(model.blocks) and prefix_tokens(model, "vit") == 1
    assert all(getattr(m, "fused_attn", True) for m, _, _ in blocks)
    with PatchSimilarityObjective(model, family="vit", tv_weight=1e-4, bandwidth=0.01, num_points=10) as obj:
        loss, parts = obj(torch.randn(2, 3, 3, 32, 32), torch.randint(5, (2, 3)))
        assert all(len(p._forward_pre_hooks) == 1 for _, p, _ in blocks)
    assert all(len(p._forward_pre_hooks) == 0 for _, p, _ in blocks)
    assert loss.shape == (2,) and set(parts) == {"entropy", "ce", "tv", "acc"}


def test_entropy_rises_and_ce_falls_over_the_run():
    model = _tiny_timm_vit()
    cfg = SynQConfig(synthesis_batch_size=4, synthesis_log_every=40)
    out = generate_synthetic(model, cfg, data_config=DC, num_images=4, iterations=80, seed=0, progress=False)
    first, last = out.history[0], out.history[-1]
    assert out.family == "vit" and out.config.synthesis_lr == 0.2
    assert last["entropy"] > first["entropy"]
    assert last["ce"] < first["ce"]
    lo, hi = (0 - 0.5) / 0.5, (1 - 0.5) / 0.5  # pixels stay in the valid normalized range
    assert out.pixels.min() >= lo - 1e-6 and out.pixels.max() <= hi + 1e-6


def _transformers_models():
    from transformers import (
        DeiTConfig,
        DeiTForImageClassification,
        SwinConfig,
        SwinForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    common = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "num_labels": 5}
    return {
        "vit": (ViTForImageClassification(ViTConfig(**common)), "vit", 1),
        "deit": (DeiTForImageClassification(DeiTConfig(**common)), "vit", 2),
        "swin": (SwinForImageClassification(SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                       num_heads=[1, 2], window_size=4, num_labels=5)), "swin", 0),
    }


@pytest.mark.parametrize("name", ["vit", "deit", "swin"])
def test_transformers_models(name):
    torch.manual_seed(0)
    model, family, prefix = _transformers_models()[name]
    assert synthesis_family(model.eval()) == family and prefix_tokens(model, family) == prefix
    assert len(attention_modules(model)) == 2
    out = generate_synthetic(model, SynQConfig(synthesis_batch_size=2, synthesis_log_every=10), data_config=DC,
                             num_images=2, iterations=30, progress=False)
    assert out.pixels.shape == (2, 3, 32, 32) and torch.isfinite(out.pixels).all()
    assert out.config.synthesis_lr == (0.25 if family == "swin" else 0.2)
    # the objective works, not just runs: the patch-similarity entropy rises and the total loss falls
    first, last = out.history[0], out.history[-1]
    assert last["entropy"] > first["entropy"] and last["loss"] < first["loss"], (first, last)


def test_timm_swin_uses_window_similarities():
    model = timm.create_model("swin_tiny_patch4_window7_224", embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                              window_size=4, img_size=32, num_classes=5).eval()
    assert synthesis_family(model) == "swin" and prefix_tokens(model, "swin") == 0
    out = generate_synthetic(model, SynQConfig(synthesis_batch_size=2, synthesis_log_every=10), data_config=DC,
                             num_images=2, iterations=30, progress=False)
    assert torch.isfinite(out.pixels).all()
    first, last = out.history[0], out.history[-1]  # the window-similarity entropy rises, the total loss falls
    assert last["entropy"] > first["entropy"] and last["loss"] < first["loss"], (first, last)


def test_warmup_cosine_is_psaq_vits_schedule():
    """1,000 iterations: two cycles of 500, each 100 linear warm-up steps then a cosine decay (PSAQ-ViT)."""
    adam = GroupAdam(torch.zeros(3, 2), lr=0.2, betas=(0.5, 0.9))
    sched = GroupWarmupCosine(adam, 0.2, 1000)
    seen = []
    for _ in range(1000):
        seen.append(adam.lr.tolist())
        sched.step()
    for it in range(1000):
        i = it % 500
        want = 0.2 * (i + 1) / 100 if i < 100 else 0.5 * (1 + math.cos(math.pi * (i - 100) / 400)) * 0.2
        assert seen[it] == pytest.approx([want] * 3, rel=1e-6), it


def test_image_prior_is_psaq_vits_per_group():
    x = torch.randn(6, 3, 9, 7)
    got = image_prior(x, groups=2)
    for g, part in enumerate(x.split(3)):
        want = sum(torch.norm(d) for d in (part[..., :, :-1] - part[..., :, 1:], part[..., :-1, :] - part[..., 1:, :],
                                           part[..., 1:, :-1] - part[..., :-1, 1:],
                                           part[..., :-1, :-1] - part[..., 1:, 1:]))
        torch.testing.assert_close(got[g], want)
    xd = x[:4, :, :5, :4].double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: image_prior(t, 2), (xd,))
    flat = torch.zeros(2, 3, 4, 4, requires_grad=True)  # zero norms: zero gradient, not NaN
    image_prior(flat, 1).sum().backward()
    assert torch.equal(flat.grad, torch.zeros_like(flat))


def test_jitter_is_one_offset_and_flips_whole_groups():
    assert [jitter_limit(224, c) for c in (0, 1)] == [15, 30]  # PSAQ-ViT at 224 px
    assert [jitter_limit(32, c) for c in (0, 1)] == [2, 4]
    x = torch.randn(8, 3, 6, 6)
    out = roll_jitter_flip(x, (1, 1), torch.Generator().manual_seed(0), groups=4)
    rolled = torch.roll(x, (1, 1), (-2, -1))
    flipped = [torch.equal(out[i], rolled[i].flip(-1)) for i in range(8)]
    assert all(torch.equal(out[i], rolled[i]) or flipped[i] for i in range(8))
    assert all(flipped[2 * k] == flipped[2 * k + 1] for k in range(4))
    assert any(flipped) and not all(flipped)


def test_image_prior_is_pulled_to_its_scaled_target():
    """The TV part is |prior - target| with a target in PSAQ-ViT's range scaled by sqrt(pixels / 32x3x224x224)."""
    model = _tiny_timm_vit()
    with PatchSimilarityObjective(model, family="vit", tv_weight=0.05, bandwidth=0.01, num_points=10) as obj:
        obj.start(2)
        assert all(2500 <= t <= 3000 for t in obj._targets)
        smooth = torch.zeros(2, 3, 3, 32, 32)  # prior 0: the distance is the scaled target itself
        _, parts = obj(smooth, torch.randint(5, (2, 3)))
    scale = math.sqrt(3 * 3 * 32 * 32 / PSAQ_TV_NUMEL)
    torch.testing.assert_close(parts["tv"], torch.tensor(obj._targets) * scale)


def test_vit_synthesis_runs_psaq_vits_schedule():
    model = _tiny_timm_vit()
    cfg = SynQConfig(synthesis_batch_size=2, synthesis_log_every=10)
    out = generate_synthetic(model, cfg, data_config=DC, num_images=2, iterations=20, seed=0, progress=False)
    lrs = [h["lr"] for h in out.history]  # the rate set for the next iteration: 1/2 warm-up step, cycle 2 start
    assert [h["iteration"] for h in out.history] == [1, 10, 20]
    assert lrs[0] == pytest.approx(0.2) and lrs[1] == pytest.approx(0.1)
