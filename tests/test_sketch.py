"""Sketch channel: the classic HED-like detector, the HED network and pix2pix's post-processing (images built here)."""

import math

import pytest
import torch
from kornia.contrib import connected_components_union_find
from scipy import ndimage

from archs.hed import HED, hed_state_dict_keys, load_hed
from synthesis.sketch import (
    SketchExtractor,
    conv_tri,
    edges_nms,
    matlab_gradient,
    nms_orientation,
    smooth_curves,
    thin,
)

R = 192


def _texture(r=R, amp=0.15, seed=0):
    """Lace/pore-like texture: zero-mean noise blobs of 1-2 px, amplitude ``amp``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, r // 2, r // 2, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(noise, size=(r, r), mode="nearest") * amp


def _ellipse(r=R, cx=None, cy=None, a=60.0, b=40.0):
    ys, xs = torch.meshgrid(torch.arange(r).float(), torch.arange(r).float(), indexing="ij")
    cx = r / 2 if cx is None else cx
    cy = r / 2 if cy is None else cy
    return (((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2), xs, ys


def _rgb(gray01):
    return (gray01.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def _components(binary):
    lab = connected_components_union_find(binary.to(torch.uint8))
    return [int(v) for v in lab.unique().tolist() if v != 0]


def _classic(**kw):
    # absolute pixel lengths (no scaling with the 192 px test images); fewer bilateral passes keep the test fast
    kw.setdefault("reference_size", None)
    return SketchExtractor(detector="classic", **kw)


def test_default_detector_is_classic():
    assert SketchExtractor().detector == "classic"
    from omegaconf import OmegaConf

    cfg = OmegaConf.load("conf/data/synthesis/default.yaml").sketch
    assert cfg.detector == "auto" and cfg.hed_weights is None
    assert SketchExtractor(**{k: v for k, v in cfg.items() if k != "_target_"}).detector == "classic"


def test_textured_patch_gives_no_edges():
    img = torch.full((1, 1, R, R), 0.5)
    img[..., 40:150, 30:160] += _texture(R)[..., 40:150, 30:160]
    x = _rgb(img)
    out = _classic()(x)
    assert out.sum() == 0, f"{int(out.sum())} edge pixels on texture"
    # the test can fail: the previous default (Canny) turns the same texture into edges
    assert SketchExtractor(detector="canny", reference_size=None, sigma=1.0)(x).sum() > 200


def _check_one_closed_curve(out, rho, xs, ys, a):
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    comps = _components(out > 0.5)
    assert len(comps) == 1, f"{len(comps)} components"
    on = out[0, 0] > 0.5
    # every edge pixel lies on the contour (within 2 px of it; |grad rho| ~ 2/a near the boundary)
    dist = (rho[on].sqrt() - 1).abs() * a
    assert dist.max() <= 2.5 * a / 40
    # the curve goes all the way round: every 5-degree sector of the ellipse holds edge pixels
    ang = torch.atan2(ys[on] - R / 2, xs[on] - R / 2)
    sectors = ((ang + math.pi) / (2 * math.pi) * 72).long().clamp(max=71).unique()
    assert len(sectors) == 72
    # closed: the background splits into the inside and the outside (4-connected complement)
    inside = (rho < 0.8) & ~on
    outside = (rho > 1.2) & ~on
    lab = torch.from_numpy(ndimage.label((~on).numpy())[0])  # scipy's default structure: 4-connected
    assert lab[inside].unique().numel() == 1 and lab[outside].unique().numel() == 1
    assert lab[inside][0] != lab[outside][0]


def test_contour_gives_one_connected_curve():
    rho, xs, ys = _ellipse()
    img = torch.where(rho <= 1, 0.3, 0.7)[None, None]
    _check_one_closed_curve(_classic()(_rgb(img)), rho, xs, ys, 60.0)


def test_contour_on_texture_stays_one_curve():
    """A smooth shape on textured skin-like ground: texture stays clean, the contour stays continuous."""
    rho, xs, ys = _ellipse()
    img = torch.where(rho <= 1, 0.3, 0.7)[None, None] + _texture(R, amp=0.08, seed=1)
    _check_one_closed_curve(_classic()(_rgb(img)), rho, xs, ys, 60.0)


def test_short_components_removed():
    img = torch.full((1, 1, R, R), 0.7)
    img[..., 90:96, 90:96] = 0.2  # a 6 x 6 dot: perimeter ~ 20 px, below classic_min_length 40
    assert _classic(classic_min_length=40)(_rgb(img)).sum() == 0
    assert _classic(classic_min_length=5)(_rgb(img)).sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# pix2pix post-processing pieces
# ---------------------------------------------------------------------------------------------------------------


def test_conv_tri_is_piotr_triangle():
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1
    out = conv_tri(x, 2)
    k = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0]) / 9
    assert torch.allclose(out[0, 0, 5:10, 5:10], k[:, None] * k[None, :], atol=1e-7)
    assert torch.allclose(out.sum(), torch.tensor(1.0))


def test_matlab_gradient():
    x = torch.tensor([[1.0, 2.0, 4.0, 7.0]]).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    gx, gy = matlab_gradient(x)
    assert torch.equal(gx[0, 0, 0], torch.tensor([1.0, 1.5, 2.5, 3.0]))  # one-sided, central, central, one-sided
    assert (gy == 0).all()


def test_nms_thins_ridge_along_its_normal():
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    for ridge, along in ((torch.exp(-((xs - 20.0) ** 2) / 8), 1), (torch.exp(-((ys - 17.0) ** 2) / 8), 0)):
        e = ridge[None, None]
        o = nms_orientation(e)
        out = edges_nms(e, o, r=1, s=5, m=1.01)
        kept = out[0, 0, 8:32, 8:32] > 0.5
        assert (kept.sum(along) == 1).all()  # one pixel across the ridge, everywhere along it
    # border fading (s = 5): the row next to the border is scaled by 1/5, the border itself zeroed
    flat = torch.ones(1, 1, 20, 20)
    faded = edges_nms(flat, torch.zeros_like(flat), r=1, s=5, m=1.01)
    assert faded[0, 0, 0].max() == 0 and torch.isclose(faded[0, 0, 10, 1], torch.tensor(0.2))


def test_curve_smoothing_closes_one_pixel_gaps():
    x = torch.zeros(1, 1, 30, 60, dtype=torch.bool)
    x[0, 0, 15, 5:55] = True
    x[0, 0, 15, 30] = False  # a 1-px gap
    x[0, 0, 16, 20] = True  # and a 1-px wiggle
    out = thin(smooth_curves(x, 1.0, 0.5)) > 0.5
    assert len(_components(out)) == 1
    assert (out[0, 0, :, 10:50].sum(0) == 1).all()  # a clean 1-px line


# ---------------------------------------------------------------------------------------------------------------
# HED network
# ---------------------------------------------------------------------------------------------------------------


def test_hed_layout_is_the_pytorch_port():
    keys = hed_state_dict_keys()
    shapes = {k: tuple(v.shape) for k, v in HED().state_dict().items()}
    assert keys[0] == "netVggOne.0.weight" and keys[-1] == "netCombine.0.bias" and len(keys) == 38
    assert shapes["netVggOne.0.weight"] == (64, 3, 3, 3)
    assert shapes["netVggTwo.1.weight"] == (128, 64, 3, 3)  # index 0 of blocks 2-5 is the max-pool
    assert shapes["netVggFiv.5.weight"] == (512, 512, 3, 3)
    assert shapes["netScoreFou.weight"] == (1, 512, 1, 1)
    assert shapes["netCombine.0.weight"] == (1, 5, 1, 1)


@pytest.mark.parametrize("prefix", ["net", "module"])
def test_hed_weights_load(tmp_path, prefix):
    """Random-init HED weights written by the test (no pretrained file here), in the port's current (net*) and
    older (module*) key names; loaded into the extractor and run batched."""
    torch.manual_seed(0)
    state = {prefix + k[len("net") :]: v for k, v in HED().state_dict().items()}
    path = tmp_path / "network-bsds500.pytorch"
    torch.save(state, path)
    net = load_hed(path)
    assert torch.equal(net.netVggThr[3].weight, state[prefix + "VggThr.3.weight"])
    sk = SketchExtractor(hed_weights=str(path))
    assert sk.detector == "hed"
    x = torch.rand(2, 3, 48, 56) * 2 - 1
    out = sk(x)
    assert out.shape == (2, 1, 48, 56) and set(out.unique().tolist()) <= {0.0, 1.0}
    prob = sk.hed_edges((x + 1) / 2)
    assert prob.shape == (2, 1, 48, 56) and (prob >= 0).all() and (prob <= 1).all()
    assert torch.allclose(sk.hed_edges((x[1:] + 1) / 2), prob[1:], atol=1e-5)  # batching changes nothing


def test_hed_bad_weights_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pytorch.*sniklaus/pytorch-hed"):
        SketchExtractor(hed_weights=str(tmp_path / "nope.pytorch"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match=r"wrong\.pth.*sniklaus/pytorch-hed layout.*netVggOne\.0\.weight"):
        SketchExtractor(hed_weights=str(wrong))
    shape = tmp_path / "shape.pth"
    state = HED().state_dict()
    state["netCombine.0.weight"] = torch.zeros(1, 4, 1, 1)
    torch.save(state, shape)
    with pytest.raises(ValueError, match=r"(?s)shape\.pth.*size mismatch for netCombine"):
        load_hed(shape)
    with pytest.raises(ValueError, match="hed_weights"):
        SketchExtractor(detector="hed")


def test_hed_postprocessing_pix2pix(tmp_path, monkeypatch):
    """HED's soft map through the pix2pix steps: a strong blurred ridge -> one 1-px curve; a ridge fainter than
    25/255 -> nothing; a 2 x 2 speck above threshold -> removed (bwareaopen 5)."""
    torch.manual_seed(0)
    path = tmp_path / "hed.pth"
    torch.save(HED().state_dict(), path)
    sk = SketchExtractor(hed_weights=str(path), reference_size=None)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    soft = torch.zeros(1, 1, 64, 64)
    soft[0, 0] += 0.6 * torch.exp(-((xs - 20) ** 2) / 4) * ((ys > 8) & (ys < 56))
    soft[0, 0] += 0.08 * torch.exp(-((xs - 44) ** 2) / 4) * ((ys > 8) & (ys < 56))  # 0.08 < 25/255
    soft[0, 0, 30:32, 54:56] = 0.9
    monkeypatch.setattr(sk, "hed_edges", lambda x01: soft)
    out = sk(torch.zeros(1, 3, 64, 64))
    assert len(_components(out > 0.5)) == 1
    assert (out[0, 0, 12:52, 17:24].sum(1) == 1).all() and out[0, 0, :, 30:].sum() == 0
