"""SC-FEGAN input synthesis: masks, sketch, colour map, pipeline (small images, CPU)."""

import math
import time

import cv2
import numpy as np
import pytest
import torch
from kornia.filters import bilateral_blur, canny

from synthesis.color import ColorMapExtractor, bilateral_taps, region_median
from synthesis.masks import (
    QUANT,
    BrushStrokeMask,
    FreeFormMask,
    MaskGenerator,
    rasterize_capsules,
    sample_rng,
)
from synthesis.pipeline import FaceInputSynthesizer
from synthesis.sketch import SketchExtractor, hysteresis, remove_small_components, thin

R = 64


def _like(b=4, r=R, dtype=torch.float32):
    return torch.zeros(b, 3, r, r, dtype=dtype)


def _smooth_image(b=2, r=R, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, r // 8, r // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(r, r), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1


def _seg(b=2, r=R):
    """A crude face layout: background 0, skin 1, hair 13 on top, eyes 5 (image-left) and 4 (image-right)."""
    seg = torch.zeros(b, 1, r, r, dtype=torch.long)
    seg[:, :, r // 4 :, r // 8 : 7 * r // 8] = 1
    seg[:, :, : r // 4, :] = 13
    seg[:, :, r // 2 - 2 : r // 2 + 2, r // 4 : r // 4 + 6] = 5
    seg[:, :, r // 2 - 2 : r // 2 + 2, 3 * r // 4 - 6 : 3 * r // 4] = 4
    return seg


# ---------------------------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gen",
    [
        FreeFormMask(),
        BrushStrokeMask(),
        MaskGenerator(mode="free_form"),
        MaskGenerator(mode="brush"),
        MaskGenerator(mode="choice"),
        MaskGenerator(mode="union"),
    ],
    ids=["free_form", "brush", "gen_free_form", "gen_brush", "gen_choice", "gen_union"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mask_binary_shape_dtype_device(gen, dtype):
    like = _like(4, dtype=dtype)
    m = gen(like, torch.arange(4), epoch=0, seed=0)
    assert m.shape == (4, 1, R, R) and m.dtype == dtype and m.device == like.device
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert (m.flatten(1).sum(1) > 0).all()


def test_mask_reproducible_and_distinct():
    gen = MaskGenerator(mode="union", hair_prob=0.0, min_coverage=0.0, max_coverage=1.0, coverage_bins=None)
    like = _like(6)
    a = gen(like, torch.arange(6), epoch=3, seed=7)
    b = gen(like, torch.arange(6), epoch=3, seed=7)
    assert torch.equal(a, b)
    # a sample's mask does not depend on its batch neighbours or its position in the batch
    alone = gen(_like(1), torch.tensor([4]), epoch=3, seed=7)
    assert torch.equal(alone[0], a[4])
    shuffled = gen(like, torch.tensor([5, 4, 3, 2, 1, 0]), epoch=3, seed=7)
    assert torch.equal(shuffled.flip(0), a)
    # different index / epoch / seed -> different masks
    for i in range(5):
        assert not torch.equal(a[i], a[i + 1])
    assert not torch.equal(gen(like, torch.arange(6), epoch=4, seed=7), a)
    assert not torch.equal(gen(like, torch.arange(6), epoch=3, seed=8), a)


def test_rng_streams_independent():
    assert sample_rng(0, 1, 2).uniform() == sample_rng(0, 1, 2).uniform()
    assert sample_rng(0, 1, 2).uniform() != sample_rng(0, 2, 1).uniform()
    assert sample_rng(0, 1, -1).uniform() != sample_rng(0, 1, 0).uniform()  # negative epochs are allowed


def test_rasterizer_matches_float_capsules():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        x0, y0, x1, y1 = rng.uniform(-5, 70, 4)
        rows.append((0, x0, y0, x1, y1, rng.uniform(1, 9)))
    rows.append((0, 30.3, 30.3, 30.3, 30.3, 4.0))  # a degenerate segment = a disc
    q = torch.tensor([[0, *(round(v * QUANT) for v in r[1:5]), round(r[5] * QUANT / 2)] for r in rows])
    got = rasterize_capsules(q, 1, 56, 72, tile=16)[0, 0]
    yy, xx = torch.meshgrid(torch.arange(56.0), torch.arange(72.0), indexing="ij")
    ref = torch.zeros(56, 72, dtype=torch.bool)
    for _, x0, y0, x1, y1, r in q.double().div(QUANT).tolist():
        dx, dy = x1 - x0, y1 - y0
        t = (((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-12)).clamp(0, 1)
        ref |= (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2 <= r * r
    # exact integer test vs float64: may differ only for pixels exactly on a capsule boundary
    assert (got != ref).sum() <= 2
    assert got.sum() > 500


@pytest.mark.parametrize("mode", ["free_form", "union"])
def test_coverage_within_bounds(mode):
    gen = MaskGenerator(mode=mode, hair_prob=0.5, min_coverage=0.15, max_coverage=0.35, max_tries=3, coverage_bins=None)
    seg = _seg(32)
    m = gen(_like(32), torch.arange(32), epoch=0, seed=1, seg=seg)
    cov = m.mean((1, 2, 3))
    assert (cov >= 0.15 - 1e-6).all() and (cov <= 0.35 + 1e-6).all(), cov


def test_coverage_clip_fallback():
    # one try only and a narrow band: most samples go through the deterministic square clip
    gen = MaskGenerator(
        mode="union", hair_prob=0.0, min_coverage=0.2, max_coverage=0.25, max_tries=1, coverage_bins=None
    )
    m = gen(_like(16), torch.arange(16), epoch=0, seed=0)
    cov = m.mean((1, 2, 3))
    assert gen.last_stats["clipped"], "the fallback path was not exercised"
    assert (cov >= 0.2 - 1e-6).all() and (cov <= 0.25 + 1e-6).all(), cov
    assert torch.equal(m, gen(_like(16), torch.arange(16), epoch=0, seed=0))


def test_eye_anchored_stroke_covers_eye():
    eyes = torch.tensor([[20.0, 30.0], [44.0, 30.0]]).expand(16, 2, 2)
    gen = FreeFormMask(max_draw=2, max_line=2, eye_line_prob=1.0)
    m = gen(_like(16), torch.arange(16), epoch=0, seed=0, eyes=eyes)
    at_eyes = m[:, 0, 30][:, [20, 44]]
    assert (at_eyes.amax(1) == 1).all()
    # without eye lines the eye pixels are mostly free
    m0 = FreeFormMask(max_draw=2, max_line=2, eye_line_prob=0.0)(_like(16), torch.arange(16), 0, 0, eyes=eyes)
    assert m0[:, 0, 30][:, [20, 44]].amax(1).sum() < 16


def test_hair_union_includes_hair():
    seg = _seg(8)
    gen = MaskGenerator(hair_prob=1.0, min_coverage=0.0, max_coverage=1.0, coverage_bins=None)
    m = gen(_like(8), torch.arange(8), epoch=0, seed=0, seg=seg)
    hair = seg == 13
    assert (m[hair] == 1).all()
    none = MaskGenerator(hair_prob=0.0, coverage_bins=None, min_coverage=0.0, max_coverage=1.0)(
        _like(8), torch.arange(8), 0, 0, seg=seg
    )
    assert (none[hair] == 0).any()


def test_brush_parameters_follow_deepfill():
    brush = BrushStrokeMask()
    for i in range(30):
        rows = brush.sample_strokes(sample_rng(0, i, 0), 256, 256, None)
        widths = {r[4] for r in rows}
        assert 1 <= len(widths) <= 3 and all(12 <= w < 40 and w == int(w) for w in widths)
        assert 4 <= len(rows) <= 3 * 11
        assert all(0 <= v <= 255 for r in rows for v in r[:4])


# ---------------------------------------------------------------------------------------------------------------
# sketch
# ---------------------------------------------------------------------------------------------------------------


def test_remove_small_components_exact():
    x = torch.zeros(1, 1, 20, 20)
    x[0, 0, 2, 2:4] = 1  # 2 px: removed
    x[0, 0, 10, 2:6] = 1  # 4 px: removed
    x[0, 0, 15, 2:7] = 1  # 5 px: kept
    for i in range(5):  # 5 px diagonal (8-connected): kept
        x[0, 0, 2 + i, 10 + i] = 1
    out = remove_small_components(x, 5)
    assert out[0, 0, 2, 2:4].sum() == 0 and out[0, 0, 10].sum() == 0
    assert out[0, 0, 15].sum() == 5 and out.sum() == 10


def test_sketch_drops_speck_and_is_binary(monkeypatch):
    img = torch.full((1, 3, R, R), 0.6)
    img[..., 16:40, 16:40] = -0.6
    sk = SketchExtractor()
    out = sk(img)
    assert set(out.unique().tolist()) <= {0.0, 1.0} and out.sum() > 40
    # a 2-px speck in the edge map never reaches the sketch (bwareaopen 5)
    raw = sk.edges(img)
    raw[0, 0, 52, 52:54] = True
    monkeypatch.setattr(sk, "edges", lambda image: raw)
    out2 = sk(img)
    assert out2[0, 0, 50:55, 50:56].sum() == 0
    assert torch.equal(out2, out)


def test_thinning_one_pixel_wide():
    x = torch.zeros(1, 1, 24, 40)
    x[0, 0, 10:13, 5:35] = 1  # a 3-px thick bar
    t = thin(x)
    assert (t <= x).all()
    assert (t[0, 0, :, 8:32].sum(0) == 1).all()  # one pixel per column away from the ends
    assert remove_small_components(t, 2).sum() == t.sum()  # still one connected curve (no isolated pixels)


def test_hysteresis_matches_kornia():
    img = _smooth_image(2, 48, seed=3)
    gray = (img[:, :1] + 1) / 2
    _, ref = canny(gray, 0.05, 0.15, hysteresis=True)
    _, raw = canny(gray, 0.05, 0.15, hysteresis=False)
    assert torch.equal(hysteresis(raw), ref > 0.5)


def test_dexined_weights(tmp_path):
    from kornia.models.dexined import DexiNed

    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        SketchExtractor(dexined_weights=str(missing))
    path = tmp_path / "dexined_random.pth"
    torch.manual_seed(0)
    torch.save(DexiNed(pretrained=False).state_dict(), path)
    sk = SketchExtractor(dexined_weights=str(path))
    out = sk(_smooth_image(1, 40))
    assert out.shape == (1, 1, 40, 40) and set(out.unique().tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------------------------------------------


def test_bilateral_taps_equal_kornia_and_opencv():
    x = torch.rand(2, 3, 40, 40)
    square = bilateral_taps(x, 9, 0.1, 25.0, window="square")
    assert (square - bilateral_blur(x, 9, 0.1, (25.0, 25.0))).abs().max() < 1e-5
    disk = bilateral_taps(x, 9, 0.1, 25.0, window="disk")
    ref = cv2.bilateralFilter(x[1].permute(1, 2, 0).numpy().copy(), 9, 0.1, 25.0)
    assert np.abs(disk[1].permute(1, 2, 0).numpy() - ref).max() < 1e-4


def test_region_median_matches_numpy():
    g = torch.Generator().manual_seed(0)
    vals = torch.rand(2, 3, 9, 11, generator=g)
    regions = torch.randint(0, 5, (2, 1, 9, 11), generator=g)
    out = region_median(vals, regions, 7)
    for b in range(2):
        for r in regions[b].unique().tolist():
            sel = regions[b, 0] == r
            med = np.median(vals[b][:, sel].numpy(), axis=1)
            assert np.allclose(out[b][:, sel].numpy(), med[:, None], atol=1e-6)


def test_color_constant_per_segment_and_range():
    img = _smooth_image(2)
    seg = _seg(2)
    col = ColorMapExtractor(bilateral_iterations=2)(img, seg)
    assert col.shape == img.shape and col.min() >= -1 and col.max() <= 1
    for b in range(2):
        for lab in seg[b].unique().tolist():
            vals = col[b][:, seg[b, 0] == lab]
            assert (vals - vals[:, :1]).abs().max() == 0
    # without labels, segmentation=kmeans (the previous fallback): at most num_clusters colours
    col2 = ColorMapExtractor(bilateral_iterations=2, num_clusters=6, segmentation="kmeans")(img)
    assert len(torch.unique(col2[0].flatten(1), dim=1).T) <= 6
    # default fallback (merged regions; tests/test_color.py): piecewise constant, far fewer colours than pixels
    col3 = ColorMapExtractor(bilateral_iterations=2)(img)
    counts = torch.unique(col3[0].flatten(1), dim=1, return_counts=True)[1]
    assert col3.shape == img.shape and counts.min() >= round(0.002 * R * R)  # min_region_area


# ---------------------------------------------------------------------------------------------------------------
# pipeline
# ---------------------------------------------------------------------------------------------------------------


def _synth(**kw):
    return FaceInputSynthesizer(color=ColorMapExtractor(bilateral_iterations=2), **kw)


@pytest.mark.parametrize("noise_type", ["gaussian", "binary16"])
def test_pipeline_channels_zero_outside_mask(noise_type):
    synth = _synth(noise_type=noise_type, timing=True)
    batch = {"image": _smooth_image(3), "seg": _seg(3), "index": torch.tensor([0, 1, 2])}
    out = synth(batch, epoch=0, seed=0)
    m = out["mask"]
    assert out["sketch"].shape == m.shape == out["noise"].shape == (3, 1, R, R)
    assert out["color"].shape == (3, 3, R, R)
    outside = (m == 0).expand(-1, 3, -1, -1)
    for key in ("sketch", "noise"):
        assert (out[key][m == 0] == 0).all()
    assert (out["color"][outside] == 0).all()
    assert set(out["sketch"].unique().tolist()) <= {0.0, 1.0}
    # colour constant per segment inside the mask
    for b in range(3):
        for lab in batch["seg"][b].unique().tolist():
            sel = (batch["seg"][b, 0] == lab) & (m[b, 0] == 1)
            if sel.any():
                vals = out["color"][b][:, sel]
                assert (vals - vals[:, :1]).abs().max() == 0
    if noise_type == "binary16":
        inside = out["noise"][m == 1]
        assert set(inside.unique().tolist()) <= {0.0, 1.0}
        assert 0.08 < inside.mean() < 0.25  # ~16 % (P(N(0,1) >= 1))
    assert {"mask", "sketch", "color", "noise", "total"} <= set(synth.last_timing)
    # reproducible
    again = synth(batch, epoch=0, seed=0)
    for key in ("mask", "sketch", "color", "noise"):
        assert torch.equal(again[key], out[key])


def test_pipeline_eye_sources():
    synth = _synth()
    seg = _seg(2)
    seg[1][seg[1] == 4] = 1  # sample 1 has no l_eye (image-right eye) part
    eyes = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[float("nan")] * 2, [50.0, 20.0]]])
    got = synth.resolve_eyes(seg, eyes, R, R, "cpu")
    ys, xs = (seg[0, 0] == 5).nonzero(as_tuple=True)
    assert torch.allclose(got[0, 0], torch.stack([xs.double().mean(), ys.double().mean()]))
    assert got[0, 1, 0] > got[0, 0, 0]  # image-right eye (l_eye) right of the image-left one
    assert torch.equal(got[1, 1], torch.tensor([50.0, 20.0], dtype=torch.float64))  # from `eyes`
    fixed = synth.resolve_eyes(None, None, 128, 128, "cpu")[0]
    assert torch.allclose(fixed, torch.tensor([[203.0, 245.0], [309.0, 245.0]], dtype=torch.float64) / 4)


@pytest.mark.slow
def test_full_resolution_batch_timing():
    """A 512 x 512 batch of 2 through the whole synthesizer on the CPU (prints the time)."""
    synth = FaceInputSynthesizer(timing=True)
    batch = {"image": _smooth_image(2, 512), "seg": _seg(2, 512), "index": torch.tensor([0, 1])}
    t0 = time.perf_counter()
    out = synth(batch, epoch=0, seed=0)
    dt = time.perf_counter() - t0
    print(
        f"\n512x512 batch of 2 on CPU: {dt:.2f} s; stages (ms): "
        + ", ".join(f"{k} {v:.0f}" for k, v in synth.last_timing.items())
    )
    assert out["mask"].shape == (2, 1, 512, 512)
    assert math.isfinite(dt)
