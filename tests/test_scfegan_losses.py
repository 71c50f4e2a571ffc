"""SC-FEGAN losses against their formulas (arXiv 1902.06838 sec. 3.3)."""

import pytest
import torch

from archs.scfegan_generator import SCFEGANGenerator, composite, make_generator_input
from archs.sn_patch_discriminator import SNPatchDiscriminator
from losses.scfegan_loss import (
    PAPER_WEIGHTS,
    PerceptualStyleLoss,
    PerPixelLoss,
    discriminator_loss,
    drift_loss,
    generator_adversarial_loss,
    gradient_penalty,
    gram_matrix,
    perceptual_loss_from_features,
    style_loss_from_features,
    total_variation_loss,
)


def test_paper_weights():
    assert PAPER_WEIGHTS == {
        "alpha": 6.0, "sigma": 0.05, "gamma": 120.0, "upsilon": 0.1,
        "beta": 0.001, "theta": 10.0, "epsilon": 0.001,
    }  # fmt: skip


# --------------------------------------------------------------------------- per-pixel


def test_per_pixel_hand_values():
    gen = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # hole |1| + |4| = 5 weighted by alpha; valid |2| + |3| = 5 weighted by 1; N = 4.
    assert PerPixelLoss(alpha=6.0)(gen, gt, mask).item() == pytest.approx((6 * 5 + 5) / 4)
    assert PerPixelLoss(alpha=6.0, alpha_on="valid")(gen, gt, mask).item() == pytest.approx((5 + 6 * 5) / 4)
    assert PerPixelLoss(alpha=1.0)(gen, gt, mask).item() == pytest.approx(10 / 4)


def test_per_pixel_broadcasts_mask_over_channels():
    torch.manual_seed(0)
    gen, gt = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    mask = (torch.rand(2, 1, 5, 5) > 0.5).float()
    m3 = mask.expand_as(gen)
    diff = (gen - gt).abs()
    expected = (2.0 * (m3 * diff).sum() + ((1 - m3) * diff).sum()) / gen.numel()
    torch.testing.assert_close(PerPixelLoss(alpha=2.0)(gen, gt, mask), expected)


# --------------------------------------------------------------------------- perceptual / style


def test_gram_matrix_formula():
    torch.manual_seed(0)
    feat = torch.randn(2, 4, 3, 5)
    g = gram_matrix(feat)
    assert g.shape == (2, 4, 4)
    for b in range(2):
        f = feat[b].reshape(4, 15)
        torch.testing.assert_close(g[b], f @ f.T / (4 * 3 * 5))


def test_style_and_perceptual_from_features_formula():
    torch.manual_seed(0)
    shapes = {"pool1": (2, 4, 6, 6), "pool2": (2, 8, 3, 3)}
    fa = {k: torch.randn(s) for k, s in shapes.items()}
    fb = {k: torch.randn(s) for k, s in shapes.items()}
    style, percept = 0.0, 0.0
    for k, (b, c, h, w) in shapes.items():
        n_q = c * h * w
        for i in range(b):
            ga = fa[k][i].reshape(c, h * w) @ fa[k][i].reshape(c, h * w).T
            gb = fb[k][i].reshape(c, h * w) @ fb[k][i].reshape(c, h * w).T
            # (1/C^2) * ||(G(a) - G(gt)) / N_q||_1, averaged over the batch.
            style += (1 / c**2) * ((ga - gb) / n_q).abs().sum() / b
        percept += (fa[k] - fb[k]).abs().sum() / fa[k].numel()
    torch.testing.assert_close(style_loss_from_features(fa, fb), style)
    torch.testing.assert_close(perceptual_loss_from_features(fa, fb), percept)


@pytest.fixture(scope="module")
def random_vgg16():
    from archs.vgg_features import VGGFeatureExtractor

    # RANDOM VGG16: the ImageNet weights cannot be downloaded here (no network).  The tests
    # check the loss plumbing and formulas, not perceptual quality.
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        return VGGFeatureExtractor(["pool1", "pool2", "pool3"], arch="vgg16", weights="random", range_norm=True)


def test_perceptual_style_zero_for_identical_inputs(random_vgg16):
    loss = PerceptualStyleLoss(extractor=random_vgg16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = loss(x, x.clone(), x.clone())
    for key in ("perceptual", "style", "weighted"):
        assert out[key].item() == 0.0, key


def test_perceptual_style_matches_feature_formulas(random_vgg16):
    torch.manual_seed(1)
    loss = PerceptualStyleLoss(sigma=0.05, gamma=120.0, extractor=random_vgg16)
    gt = torch.rand(2, 3, 32, 32) * 2 - 1
    gen = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    comp = composite(gen, gt, mask)
    out = loss(gen, comp, gt)
    f_gen, f_comp, f_gt = random_vgg16(gen), random_vgg16(comp), random_vgg16(gt)
    assert set(f_gt) == {"pool1", "pool2", "pool3"}
    percept = perceptual_loss_from_features(f_gen, f_gt) + perceptual_loss_from_features(f_comp, f_gt)
    style = style_loss_from_features(f_gen, f_gt) + style_loss_from_features(f_comp, f_gt)
    torch.testing.assert_close(out["perceptual"], percept)
    torch.testing.assert_close(out["style"], style)
    torch.testing.assert_close(out["weighted"], 0.05 * percept + 120.0 * style)
    assert out["perceptual"] > 0 and out["style"] > 0
    out["weighted"].backward()
    assert gen.grad is not None and gen.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_vgg16.parameters())  # VGG stays frozen


# --------------------------------------------------------------------------- total variation


def test_total_variation_hand_values():
    comp = torch.arange(16.0).reshape(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 1, 1] = 1
    # Dilated region = rows 0-2 x cols 0-2.  Horizontal: 3 rows x 2 pairs x |1| = 6;
    # vertical: 2 pairs x 3 cols x |4| = 24.  N = 16.
    assert total_variation_loss(comp, mask).item() == pytest.approx(30 / 16)
    assert total_variation_loss(comp, torch.zeros_like(mask)).item() == 0.0


def test_total_variation_matches_loop():
    torch.manual_seed(0)
    comp = torch.randn(2, 3, 7, 6)
    mask = (torch.rand(2, 1, 7, 6) > 0.8).float()
    b, c, h, w = comp.shape

    def in_region(n, i, j):  # 1-px dilation of the hole (8-neighbourhood)
        return any(
            mask[n, 0, ii, jj] > 0
            for ii in range(max(0, i - 1), min(h, i + 2))
            for jj in range(max(0, j - 1), min(w, j + 2))
        )

    total = 0.0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                if not in_region(n, i, j):
                    continue
                if j + 1 < w and in_region(n, i, j + 1):
                    total += (comp[n, :, i, j + 1] - comp[n, :, i, j]).abs().sum()
                if i + 1 < h and in_region(n, i + 1, j):
                    total += (comp[n, :, i + 1, j] - comp[n, :, i, j]).abs().sum()
    torch.testing.assert_close(total_variation_loss(comp, mask), total / comp.numel())


# --------------------------------------------------------------------------- adversarial


def test_adversarial_losses_hand_values():
    d_real = torch.tensor([2.0, -1.0, 0.5, 0.5])
    d_fake = torch.tensor([-3.0, 1.0, 0.0, 2.0])
    assert generator_adversarial_loss(d_fake).item() == pytest.approx(0.0)
    # No ReLU: mean(1 - d_real) + mean(1 + d_fake) = (1 - 0.5) + (1 + 0.0).
    assert discriminator_loss(d_real, d_fake).item() == pytest.approx(1.5)
    assert discriminator_loss(torch.tensor([5.0]), torch.tensor([-5.0])).item() == pytest.approx(-8.0)
    assert drift_loss(d_real).item() == pytest.approx((4 + 1 + 0.25 + 0.25) / 4)


def _d_inputs(batch=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = torch.rand(batch, 5, size, size, generator=g)
    real = torch.cat([torch.rand(batch, 3, size, size, generator=g) * 2 - 1, cond], 1)
    fake = torch.cat([torch.rand(batch, 3, size, size, generator=g) * 2 - 1, cond], 1)
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return real, fake, mask


def test_gradient_penalty_matches_direct_autograd():
    torch.manual_seed(0)
    d = SNPatchDiscriminator(cnum=4).eval()  # eval: no power iteration between the two runs
    real, fake, mask = _d_inputs()
    t = torch.tensor([0.3, 0.8])
    gp = gradient_penalty(d, real, fake, mask, t=t)

    u = (t.view(2, 1, 1, 1) * real + (1 - t.view(2, 1, 1, 1)) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(u).sum(), u)
    grad = grad[:, :3] * mask  # image channels only, inside the mask
    expected = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gp, expected)

    # Trains D (create_graph): the penalty has gradients w.r.t. D's weights.
    gp.backward()
    assert all(p.grad is not None for p in d.parameters())
    assert sum(p.grad.abs().sum() for p in d.parameters()) > 0


def test_gradient_penalty_keeps_conditions_fixed_and_masks_gradient():
    torch.manual_seed(0)
    d = SNPatchDiscriminator(cnum=4).eval()
    real, fake, mask = _d_inputs()
    t = torch.tensor([0.5, 0.5])
    other = fake.clone()
    other[:, 3:] = torch.rand_like(other[:, 3:])  # conditions come from real_input
    torch.testing.assert_close(gradient_penalty(d, real, other, mask, t=t), gradient_penalty(d, real, fake, mask, t=t))
    # Empty mask: no slope at all -> penalty (0 - 1)^2 = 1 (up to the sqrt eps).
    gp0 = gradient_penalty(d, real, fake, torch.zeros_like(mask), t=t)
    assert gp0.item() == pytest.approx(1.0, abs=1e-5)


def test_gradient_penalty_runs_in_fp32_under_autocast():
    torch.manual_seed(0)
    d = SNPatchDiscriminator(cnum=4).eval()
    real, fake, mask = _d_inputs()
    t = torch.tensor([0.2, 0.7])
    ref = gradient_penalty(d, real, fake, mask, t=t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(d, real.bfloat16(), fake.bfloat16(), mask, t=t)
    assert gp.dtype == torch.float32
    torch.testing.assert_close(gp, gradient_penalty(d, real.bfloat16().float(), fake.bfloat16().float(), mask, t=t))
    assert gp.item() == pytest.approx(ref.item(), rel=1e-2)


def test_drift_changes_d_gradients_but_not_g():
    torch.manual_seed(0)
    g = SCFEGANGenerator(cnum=4)
    d = SNPatchDiscriminator(cnum=4)
    gt = torch.rand(1, 3, 128, 128) * 2 - 1
    sketch, color = torch.rand(1, 1, 128, 128), torch.rand(1, 3, 128, 128) * 2 - 1
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 32:96, 40:100] = 1
    noise = torch.randn(1, 1, 128, 128) * mask
    comp = composite(g(make_generator_input(gt, sketch, color, mask, noise)), gt, mask)
    d_real = d(torch.cat([gt, sketch, color, mask], 1))
    d_fake = d(torch.cat([comp, sketch, color, mask], 1))
    eps = PAPER_WEIGHTS["epsilon"]
    g_params, d_params = list(g.parameters()), list(d.parameters())

    def grads(loss, params):
        out = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if x is None else x for x, p in zip(out, params)]

    # D side: the drift term changes D's gradients.
    base_d = grads(discriminator_loss(d_real, d_fake), d_params)
    with_drift_d = grads(discriminator_loss(d_real, d_fake) + eps * drift_loss(d_real), d_params)
    assert any(not torch.allclose(a, b) for a, b in zip(base_d, with_drift_d))
    # G side: the drift term has no path to G (it only sees the real image).
    assert all(
        x is None for x in torch.autograd.grad(drift_loss(d_real), g_params, retain_graph=True, allow_unused=True)
    )
    base_g = grads(generator_adversarial_loss(d_fake), g_params)
    with_drift_g = grads(generator_adversarial_loss(d_fake) + eps * drift_loss(d_real), g_params)
    assert any(x.abs().sum() > 0 for x in base_g)
    for a, b in zip(base_g, with_drift_g):
        assert torch.equal(a, b)
