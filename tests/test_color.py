"""Colour channel: region-merging fallback, face-parsing network, fast filtering (images built here)."""

import numpy as np
import pytest
import torch

from archs.bisenet import BISENET_CLASSES, BISENET_TO_CELEBAMASK, CELEBAMASK_CLASSES, BiSeNet, load_bisenet
from synthesis.color import ColorMapExtractor, merge_regions, region_median_table, slic
from synthesis.pipeline import FaceInputSynthesizer

R = 128


def _ellipse(r=R, a=40.0, b=30.0):
    ys, xs = torch.meshgrid(torch.arange(r).float(), torch.arange(r).float(), indexing="ij")
    return ((xs - r / 2) / a) ** 2 + ((ys - r / 2) / b) ** 2, xs, ys


def _shaded_face(r=R):
    """A skin-coloured ellipse lit from the left (luminance falls by ~35 % across it) on a blue-grey ground."""
    rho, xs, _ = _ellipse(r)
    shade = 1.0 - 0.35 * (xs - xs.min()) / (xs.max() - xs.min())
    skin = torch.tensor([0.85, 0.62, 0.5]).view(3, 1, 1) * shade
    ground = torch.tensor([0.35, 0.45, 0.6]).view(3, 1, 1).expand(3, r, r)
    return torch.where(rho <= 1, skin, ground)[None], rho


def _extractor(**kw):
    kw.setdefault("bilateral_iterations", 4)
    kw.setdefault("work_size", None)
    return ColorMapExtractor(**kw)


def _colours(col):
    return torch.unique(col.flatten(1), dim=1).T


def test_regions_follow_shape_not_luminance():
    img01, rho = _shaded_face()
    x = img01 * 2 - 1
    col = _extractor()(x)[0]
    inner, outer = rho < 0.85, rho > 1.2
    assert len(_colours(col[:, inner])) == 1, "the shaded ellipse is split"
    assert len(_colours(col[:, outer])) == 1
    assert not torch.equal(col[:, inner][:, 0], col[:, outer][:, 0])
    # the test can fail: k-means (the previous fallback) posterises the same shading into bands
    km = _extractor(segmentation="kmeans", num_clusters=16)(x)[0]
    assert len(_colours(km[:, inner])) > 1


def test_small_objects_and_text_vanish():
    img01, rho = _shaded_face()
    img01 = img01.clone()
    img01[:, :, 60:65, 60:65] = 0.0  # a 5 x 5 black "earring" inside the face
    for k in range(4):  # text-like strokes on the ground: 1-px lines in a 12 x 8 box per glyph
        x0 = 6 + 10 * k
        img01[:, :, 110:118, x0] = 1.0
        img01[:, :, 110, x0 : x0 + 6] = 1.0
        img01[:, :, 117, x0 : x0 + 6] = 1.0
    col = _extractor()(img01 * 2 - 1)[0]
    face = col[:, 58:67, 50:58].flatten(1)[:, 0]
    assert (col[:, 60:65, 60:65] == face.view(3, 1, 1)).all()
    ground = col[:, 100, 100]
    assert (col[:, 108:120, 4:48] == ground.view(3, 1, 1)).all()
    # without the minimum area the object survives as its own region
    col0 = _extractor(min_region_area=0.0)(img01 * 2 - 1)[0]
    assert not (col0[:, 62, 62] == face).all()


def test_every_region_constant_and_range():
    img01, _ = _shaded_face()
    g = torch.Generator().manual_seed(0)
    noise = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(R, R), mode="bicubic")
    x = (img01 * 0.7 + noise.clamp(0, 1) * 0.3) * 2 - 1
    ext = _extractor()
    col = ext(x)
    assert col.shape == x.shape and col.min() >= -1 and col.max() <= 1
    regions = ext.merged_regions(ext.smooth((x + 1) / 2))
    for r in regions.unique().tolist():
        vals = col[0][:, regions[0, 0] == r]
        assert (vals == vals[:, :1]).all()
    # the colour of a region is its median (within half a 1024-bin histogram bin)
    smooth = ext.smooth((x + 1) / 2)
    r0 = regions[0, 0] == regions[0, 0, 64, 64]
    med = np.median(smooth[0][:, r0].numpy(), axis=1)
    assert np.abs((col[0][:, 64, 64].numpy() + 1) / 2 - med).max() <= 1 / 1024


def test_color_zero_outside_mask_without_labels():
    img01, _ = _shaded_face()
    synth = FaceInputSynthesizer(color=_extractor())
    out = synth({"image": img01.repeat(2, 1, 1, 1) * 2 - 1, "index": torch.tensor([0, 1])}, epoch=0, seed=0)
    outside = (out["mask"] == 0).expand(-1, 3, -1, -1)
    assert (out["color"][outside] == 0).all() and out["color"][~outside].abs().sum() > 0


def test_merge_regions_step_and_min_area():
    lab = torch.zeros(1, 3, 20, 40)
    lab[:, 0, :, 20:] = 60.0  # a 60 Delta-E step between two halves
    lab[:, 0, :, :20] += torch.linspace(0, 3, 20)  # and a slow ramp inside the left half
    labels = slic(lab, 5, 10.0, 3)
    merged = merge_regions(labels, lab, boundary_threshold=4.0, mean_threshold=25.0, min_area=1)
    assert merged[0, 0, :, :20].unique().numel() == 1 and merged[0, 0, :, 20:].unique().numel() == 1
    assert merged.max() == 1
    # a minimum area above half the image merges the halves
    assert merge_regions(labels, lab, 4.0, 25.0, min_area=500).max() == 0
    # batched: samples do not interact and get their own compact ids
    both = merge_regions(torch.cat([labels, labels]), torch.cat([lab, lab.flip(-1)]), 4.0, 25.0, 1)
    assert both[0].max() == 1 and both[1].max() == 1


def test_region_median_table_matches_numpy():
    g = torch.Generator().manual_seed(0)
    vals = torch.rand(2, 3, 9, 11, generator=g)
    regions = torch.randint(0, 5, (2, 1, 9, 11), generator=g)
    table, counts = region_median_table(vals, regions, 6, bins=1024)
    for b in range(2):
        for r in range(6):
            sel = regions[b, 0] == r
            assert counts[b, r] == sel.sum()
            if sel.any():
                lower = np.sort(vals[b][:, sel].numpy(), axis=1)[:, (int(sel.sum()) - 1) // 2]
                assert np.abs(table[b, r].numpy() - lower).max() <= 0.5 / 1024 + 1e-6


def test_work_size_close_to_full_resolution():
    """Filtering at half size (the speed default) changes the per-part median colours by about 1/255."""
    img01, rho = _shaded_face(256)
    seg = torch.where(rho <= 1, 1, 0).long()[None, None]
    full = ColorMapExtractor(bilateral_iterations=5, work_size=None, median_bins=None)(img01 * 2 - 1, seg)
    fast = ColorMapExtractor(bilateral_iterations=5, work_size=128, reference_size=256)(img01 * 2 - 1, seg)
    assert ((full - fast).abs() / 2).max() < 2.5 / 255
    for lab in (0, 1):
        vals = fast[0][:, seg[0, 0] == lab]
        assert (vals == vals[:, :1]).all()


def test_labels_still_win_and_kmeans_selectable():
    img01, rho = _shaded_face()
    seg = torch.where(rho <= 1, 1, 0).long()[None, None]
    col = _extractor()(img01 * 2 - 1, seg)[0]
    assert len(_colours(col[:, seg[0, 0] == 1])) == 1 and len(_colours(col)) == 2
    km = _extractor(segmentation="kmeans", num_clusters=5)(img01 * 2 - 1)
    assert len(_colours(km[0])) <= 5


# ---------------------------------------------------------------------------------------------------------------
# face-parsing network
# ---------------------------------------------------------------------------------------------------------------


def test_bisenet_layout_is_zllrunning():
    sd = BiSeNet(19).state_dict()
    assert list(sd)[0] == "cp.resnet.conv1.weight" and tuple(sd["cp.resnet.conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(sd["cp.resnet.layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd["cp.arm32.conv_atten.weight"].shape) == (128, 128, 1, 1)
    assert tuple(sd["ffm.convblk.conv.weight"].shape) == (256, 256, 1, 1)  # 1/8 ResNet (128) + context (128)
    assert tuple(sd["conv_out.conv_out.weight"].shape) == (19, 256, 1, 1)
    assert tuple(sd["conv_out16.conv_out.weight"].shape) == (19, 64, 1, 1)
    assert len(sd) == 191
    # class maps: the port's order -> CelebAMask-HQ order, names preserved
    assert all(CELEBAMASK_CLASSES[BISENET_TO_CELEBAMASK[i]] == n for i, n in enumerate(BISENET_CLASSES))
    assert BISENET_CLASSES[17] == "hair" and CELEBAMASK_CLASSES[13] == "hair"


@pytest.mark.slow
def test_parsing_weights_load_and_paint(tmp_path):
    """Random-init BiSeNet weights written by the test (no pretrained file here)."""
    torch.manual_seed(0)
    net = BiSeNet(19)
    for m in net.modules():  # non-trivial BN statistics so a wrong key order would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "79999_iter.pth"
    torch.save(net.state_dict(), path)
    loaded = load_bisenet(path)
    assert torch.equal(loaded.cp.arm16.bn_atten.running_var, net.cp.arm16.bn_atten.running_var)
    ext = _extractor(parsing_weights=str(path))
    img01, rho = _shaded_face(64)
    x = img01.repeat(2, 1, 1, 1) * 2 - 1
    seg = torch.full((2, 1, 64, 64), -1, dtype=torch.long)
    seg[1] = torch.where(rho <= 1, 1, 0)  # sample 1 is labelled: its labels win over the parser
    col = ext(x, seg)
    parsed = torch.tensor(BISENET_TO_CELEBAMASK)[loaded.eval().parse((x[:1] + 1) / 2, 512)]
    for lab in parsed.unique().tolist():
        vals = col[0][:, parsed[0, 0] == lab]
        assert (vals == vals[:, :1]).all()
    assert len(_colours(col[1])) == 2


def test_parsing_bad_weights_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*zllrunning/face-parsing\.PyTorch"):
        ColorMapExtractor(parsing_weights=str(tmp_path / "nope.pth"))
    wrong = tmp_path / "hed.pth"
    torch.save({"netVggOne.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match=r"hed\.pth.*zllrunning BiSeNet layout.*cp\.resnet\.conv1\.weight"):
        ColorMapExtractor(parsing_weights=str(wrong))
    with pytest.raises(ValueError, match="parsing_weights"):
        ColorMapExtractor(segmentation="parsing")


def test_median_filter_cpu_matches_kornia():
    """The CPU path (cv2.medianBlur) and the device path (kornia) of the median filter agree (interior; the
    borders differ: reflect-101 vs zero padding)."""
    from kornia.filters import median_blur

    from synthesis.color import median_filter

    x = torch.rand(2, 3, 20, 24)
    for k in (3, 5):
        p = k // 2
        assert torch.equal(median_filter(x, k)[..., p:-p, p:-p], median_blur(x, k)[..., p:-p, p:-p])
