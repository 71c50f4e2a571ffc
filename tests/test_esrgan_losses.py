"""ESRGAN losses: L1, perceptual (VGG19 conv5_4) and BasicSR's split RaGAN.

The perceptual-loss tests use a RANDOMLY initialised VGG19: the ImageNet weights cannot be
downloaded here.  What they check (layer cut, normalisation, weight loading, freezing) does
not depend on the weight values.
"""

import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision import models

from archs.vgg_features import WeightsNotFoundError, load_vgg_features_state
from losses.basic_loss import L1Loss, PerceptualLoss
from losses.gan_loss import (
    ragan_discriminator_fake_loss,
    ragan_discriminator_real_loss,
    ragan_generator_loss,
    vanilla_gan_loss,
)

# ------------------------------------------------------------------------------ helpers

# Fixed logits, float64 so the hand formulas can be compared tightly.
C_R = torch.tensor([[0.5], [-1.0], [2.0], [0.25]], dtype=torch.float64)
C_F = torch.tensor([[-0.3], [1.2], [0.1], [-2.0]], dtype=torch.float64)


def neg_log_sigmoid(x):  # BCE(x, target 1)
    return -torch.log(torch.sigmoid(x))


def neg_log_one_minus_sigmoid(x):  # BCE(x, target 0)
    return -torch.log(1 - torch.sigmoid(x))


def hand_g(c_r, c_f):
    return 0.5 * (neg_log_one_minus_sigmoid(c_r - c_f.mean()).mean() + neg_log_sigmoid(c_f - c_r.mean()).mean())


# ----------------------------------------------------------------------------- L1


def test_l1_loss_mean_and_weight():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.5], [3.0, 6.0]])
    assert torch.isclose(L1Loss()(a, b), torch.tensor(3.5 / 4))
    assert torch.isclose(L1Loss(loss_weight=1e-2)(a, b), torch.tensor(1e-2 * 3.5 / 4))


# ----------------------------------------------------------------------------- RaGAN


def test_vanilla_gan_loss_is_bce_with_logits():
    assert torch.allclose(vanilla_gan_loss(C_R, True), neg_log_sigmoid(C_R).mean())
    assert torch.allclose(vanilla_gan_loss(C_R, False), neg_log_one_minus_sigmoid(C_R).mean())


def test_ragan_generator_loss_value():
    got = ragan_generator_loss(C_R, C_F)
    assert torch.allclose(got, hand_g(C_R, C_F))
    # Spelled out once more for the first term, element by element.
    m_f, m_r = C_F.mean().item(), C_R.mean().item()
    t1 = (
        sum(-torch.log(1 - torch.sigmoid(torch.tensor(r - m_f, dtype=torch.float64))) for r in C_R.flatten().tolist())
        / 4
    )
    t2 = sum(-torch.log(torch.sigmoid(torch.tensor(f - m_r, dtype=torch.float64))) for f in C_F.flatten().tolist()) / 4
    assert torch.allclose(got, 0.5 * (t1 + t2))


def test_ragan_discriminator_loss_values():
    real = ragan_discriminator_real_loss(C_R, C_F)
    fake = ragan_discriminator_fake_loss(C_F, C_R)
    assert torch.allclose(real, 0.5 * neg_log_sigmoid(C_R - C_F.mean()).mean())
    assert torch.allclose(fake, 0.5 * neg_log_one_minus_sigmoid(C_F - C_R.mean()).mean())
    # The two halves sum to the paper's L_D^Ra / 2 evaluated without cross-gradients.
    paper = -torch.log(torch.sigmoid(C_R - C_F.mean())).mean() - torch.log(1 - torch.sigmoid(C_F - C_R.mean())).mean()
    assert torch.allclose(real + fake, paper / 2)


def test_ragan_generator_gradient_flows_through_both_terms():
    c_r = C_R.clone().requires_grad_(True)  # caller forgot to detach: must not matter
    c_f = C_F.clone().requires_grad_(True)
    ragan_generator_loss(c_r, c_f).backward()
    assert c_r.grad is None  # real logits are treated as constants

    # Reference gradient of the full hand formula (real side constant).
    ref_f = C_F.clone().requires_grad_(True)
    hand_g(C_R, ref_f).backward()
    assert torch.allclose(c_f.grad, ref_f.grad)

    # Both terms contribute: the direct term C_f - mean(C_r), and mean(C_f) in C_r - mean(C_f).
    only_direct = C_F.clone().requires_grad_(True)
    (0.5 * neg_log_sigmoid(only_direct - C_R.mean()).mean()).backward()
    only_mean = C_F.clone().requires_grad_(True)
    (0.5 * neg_log_one_minus_sigmoid(C_R - only_mean.mean()).mean()).backward()
    assert only_mean.grad.abs().min() > 0
    assert not torch.allclose(c_f.grad, only_direct.grad)
    assert torch.allclose(c_f.grad, only_direct.grad + only_mean.grad)
    # Analytic: d/dC_f_i of 0.5*mean_j softplus(C_r_j - mean(C_f)) = -0.5/N * mean_j sigmoid(C_r_j - m_f).
    n = C_F.numel()
    assert torch.allclose(
        only_mean.grad, torch.full_like(C_F, -0.5 / n * torch.sigmoid(C_R - C_F.mean()).mean().item())
    )


def test_ragan_discriminator_real_loss_gradients():
    c_r = C_R.clone().requires_grad_(True)
    c_f = C_F.clone().requires_grad_(True)  # not detached by the caller on purpose
    ragan_discriminator_real_loss(c_r, c_f).backward()
    assert c_f.grad is None  # the fake logits' mean is a constant here (BasicSR PR #278)
    n = C_R.numel()
    # d/dC_r_i 0.5*mean softplus(-(C_r - m_f)) = 0.5/N * (sigmoid(C_r_i - m_f) - 1)
    assert torch.allclose(c_r.grad, 0.5 / n * (torch.sigmoid(C_R - C_F.mean()) - 1))


def test_ragan_discriminator_fake_loss_gradients():
    c_f = C_F.clone().requires_grad_(True)
    c_r = C_R.clone().requires_grad_(True)
    ragan_discriminator_fake_loss(c_f, c_r).backward()
    assert c_r.grad is None
    n = C_F.numel()
    assert torch.allclose(c_f.grad, 0.5 / n * torch.sigmoid(C_F - C_R.mean()))


# ------------------------------------------------------------------------ perceptual


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    """A random torchvision VGG19 ``features`` state, saved two ways (RANDOM weights: no download)."""
    torch.manual_seed(0)
    # make_layers(cfg "E") is exactly vgg19().features, without allocating the 120M-param classifier.
    features = models.vgg.make_layers(models.vgg.cfgs["E"], batch_norm=False)
    bare = OrderedDict((k, v.clone()) for k, v in features.state_dict().items())
    full = OrderedDict((f"features.{k}", v) for k, v in bare.items())
    # Stand-ins for torchvision's classifier keys (real ones are 480 MB); they must be ignored.
    full["classifier.0.weight"] = torch.zeros(4, 3)
    full["classifier.0.bias"] = torch.zeros(4)
    d = tmp_path_factory.mktemp("vgg")
    torch.save(full, d / "vgg19_full.pth")
    torch.save(bare, d / "vgg19_features.pth")
    ref = models.vgg19(weights=None).features[:35]  # conv5_4, pre-ReLU
    ref.load_state_dict(OrderedDict((k, v) for k, v in bare.items() if int(k.split(".")[0]) < 35))
    ref.eval().requires_grad_(False)
    return {"full": d / "vgg19_full.pth", "bare": d / "vgg19_features.pth", "ref": ref, "dir": d}


@pytest.fixture(scope="module")
def percep_full(vgg_files):
    return PerceptualLoss(weights=str(vgg_files["full"]))


def _imagenet_norm(x):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.slow
def test_perceptual_equals_direct_vgg19_conv5_4(vgg_files, percep_full):
    assert len(percep_full.vgg.features) == 35
    torch.manual_seed(1)
    x, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    ref = vgg_files["ref"]
    expected = F.l1_loss(ref(_imagenet_norm(x)), ref(_imagenet_norm(gt)))
    assert torch.allclose(percep_full(x, gt), expected, rtol=1e-5, atol=1e-7)
    assert percep_full(x, gt) > 0


def test_perceptual_zero_for_identical_inputs(percep_full):
    x = torch.rand(1, 3, 32, 32)
    assert percep_full(x, x.clone()).item() == 0.0


def test_perceptual_vgg_frozen_and_gt_detached(percep_full):
    assert all(not p.requires_grad for p in percep_full.parameters())
    percep_full.train()  # e.g. LightningModule.train(): the VGG must stay in eval
    assert not percep_full.vgg.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    gt = torch.rand(1, 3, 32, 32, requires_grad=True)
    percep_full(x, gt).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert gt.grad is None
    assert all(p.grad is None for p in percep_full.parameters())


def test_perceptual_bare_features_file_and_layer_weights(vgg_files, percep_full):
    # Same weights from a bare ``features`` state dict; two layers, weights, overall factor.
    loss = PerceptualLoss(
        layer_weights={"conv1_2": 0.5, "conv5_4": 1.0}, weights=str(vgg_files["bare"]), perceptual_weight=2.0
    )
    x, gt = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    feats = loss.vgg(x)
    assert torch.equal(feats["conv5_4"], percep_full.vgg(x)["conv5_4"])
    ref = vgg_files["ref"]
    assert torch.allclose(feats["conv5_4"], ref(_imagenet_norm(x)), rtol=1e-5, atol=1e-6)
    # conv1_2 is followed by an in-place ReLU inside the extractor: it must still be pre-activation.
    assert (feats["conv1_2"] < 0).any()
    assert torch.allclose(feats["conv1_2"], ref[:3](_imagenet_norm(x)), rtol=1e-5, atol=1e-6)
    fx, fg = loss.vgg(x), loss.vgg(gt)
    expected = 2.0 * (0.5 * F.l1_loss(fx["conv1_2"], fg["conv1_2"]) + F.l1_loss(fx["conv5_4"], fg["conv5_4"]))
    assert torch.allclose(loss(x, gt), expected)


def test_perceptual_random_weights_warn():
    with pytest.warns(UserWarning, match="random"):
        loss = PerceptualLoss(weights="random")
    assert loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)) > 0


def test_perceptual_missing_weights_file(tmp_path):
    path = tmp_path / "nope" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(WeightsNotFoundError, match=re.escape(str(path))):
        PerceptualLoss(weights=str(path))
    assert issubclass(WeightsNotFoundError, FileNotFoundError)


def test_perceptual_wrong_keys_file(vgg_files):
    path = vgg_files["dir"] / "not_vgg.pth"
    torch.save({"encoder.weight": torch.zeros(2), "decoder.bias": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"(?s)no VGG feature keys.*decoder\.bias.*encoder\.weight"):
        load_vgg_features_state("vgg19", str(path))
    with pytest.raises(ValueError, match=r"encoder\.weight"):
        PerceptualLoss(weights=str(path))


def test_perceptual_rejects_bad_criterion():
    with pytest.raises(ValueError, match="criterion"):
        PerceptualLoss(weights="random", criterion="l3")
