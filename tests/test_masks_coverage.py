"""Mask coverage distribution (Liu et al. 2018 bins) and user-stroke evaluation masks."""

import numpy as np
import pytest
import torch
from conftest import shared_data

from synthesis.color import ColorMapExtractor
from synthesis.masks import (
    LIU2018_COVERAGE_BINS,
    NO_HIT,
    QUANT,
    MaskGenerator,
    UserStrokeMask,
    rasterize_capsules,
)
from synthesis.pipeline import FaceInputSynthesizer

R = 96  # stroke lengths and widths scale with min(H, W) / 512, so the coverage distribution is the one at 512


def _hair_seg(b, r=R):
    seg = torch.ones(b, 1, r, r, dtype=torch.long)
    seg[:, :, : r // 6] = 13  # ~17 % hair on top
    return seg


def _bin_fractions(cov: np.ndarray, bins) -> np.ndarray:
    return np.array([((cov > lo - 1e-9) & (cov <= hi + 1e-9)).mean() for lo, hi in bins])


@pytest.mark.parametrize("with_hair", [False, True])
def test_coverage_histogram_matches_liu2018_bins(with_hair):
    """N seeded masks: every mask in (1 %, 60 %], each of the six bins holds 1/6 of them within 3 binomial SE."""
    n = 144
    gen = MaskGenerator()  # the defaults: free-form lines, Liu et al. bins, equal weights
    assert gen.coverage_bins == LIU2018_COVERAGE_BINS
    seg = _hair_seg(n) if with_hair else None
    m = gen(torch.zeros(n, 3, R, R), torch.arange(n), epoch=0, seed=3, seg=seg)
    cov = m.mean((1, 2, 3)).double().numpy()
    assert cov.min() >= 0.01 - 1e-9 and cov.max() <= 0.6 + 1e-9, (cov.min(), cov.max())
    frac = _bin_fractions(cov, LIU2018_COVERAGE_BINS)
    assert abs(frac.sum() - 1.0) < 1e-9
    tol = 3 * np.sqrt((1 / 6) * (5 / 6) / n)
    assert np.abs(frac - 1 / 6).max() <= tol, frac
    assert 0.22 < np.median(cov) < 0.38, np.median(cov)
    assert (cov > 0.4).mean() < 0.42  # ~1/3, not the 46 % of Algorithm 1 with rand(maxDraw) lines
    # the masks are the paper's strokes, not the clip's squares: clipping is rare
    assert len(gen.last_stats["clipped"]) <= n // 20, gen.last_stats["clipped"]
    if with_hair:  # the hair union is kept whenever it fits the drawn bin
        hair = (seg == 13).flatten(1)
        kept = ((m.flatten(1) > 0) | ~hair).all(1)
        assert kept.float().mean() > 0.2


def test_coverage_probs_weight_the_bins_and_reproducible():
    gen = MaskGenerator(coverage_probs=[1, 0, 0, 0, 0, 1])
    m = gen(torch.zeros(48, 3, R, R), torch.arange(48), epoch=1, seed=0)
    cov = m.mean((1, 2, 3)).double().numpy()
    frac = _bin_fractions(cov, LIU2018_COVERAGE_BINS)
    assert frac[1:5].sum() == 0 and frac[0] > 0.25 and frac[5] > 0.25, frac
    assert set(gen.last_stats["bins"]) <= {0, 5}
    # same (seed, index, epoch) -> same mask, whatever the batch composition
    alone = gen(torch.zeros(1, 3, R, R), torch.tensor([7]), epoch=1, seed=0)
    assert torch.equal(alone[0], m[7])
    with pytest.raises(ValueError, match="coverage_probs"):
        MaskGenerator(coverage_probs=[1, 1])
    with pytest.raises(ValueError, match="coverage_bins"):
        MaskGenerator(coverage_bins=[[0.3, 0.2]])


def test_first_hit_rasterisation_gives_every_prefix():
    rows = torch.tensor(
        [
            [0, 10 * QUANT, 10 * QUANT, 40 * QUANT, 10 * QUANT, 3 * QUANT],
            [0, 20 * QUANT, 0, 20 * QUANT, 40 * QUANT, 3 * QUANT],
            [0, 5 * QUANT, 30 * QUANT, 45 * QUANT, 30 * QUANT, 2 * QUANT],
        ]
    )
    first = rasterize_capsules(rows, 1, 48, 48, tile=8, order=torch.tensor([1, 2, 3]))
    for k in range(1, 4):
        assert torch.equal(first <= k, rasterize_capsules(rows[:k], 1, 48, 48, tile=8))
    assert (first[first > 3] == NO_HIT).all()


# ---------------------------------------------------------------------------------------------------------------
# user strokes
# ---------------------------------------------------------------------------------------------------------------


def _face_seg(b=6, r=R):
    """Skin with a vertical nose ellipse (2) and a horizontal mouth ellipse (11, 12) at different places per sample."""
    yy, xx = torch.meshgrid(torch.arange(r, dtype=torch.float64), torch.arange(r, dtype=torch.float64), indexing="ij")
    seg = torch.ones(b, 1, r, r, dtype=torch.long)
    for i in range(b):
        nx, ny = 40 + 6 * i, 50 + 3 * i
        seg[i, 0][((xx - nx) / 6) ** 2 + ((yy - ny) / 14) ** 2 <= 1] = 2
        mx, my = 80 - 4 * i, 100
        seg[i, 0][((xx - mx) / 16) ** 2 + ((yy - my) / 5) ** 2 <= 1] = 11 + (i % 2)
    return seg


def test_user_strokes_lie_over_the_chosen_part():
    seg = _face_seg()
    gen = UserStrokeMask(parts={"nose": [2], "mouth": [10, 11, 12]})
    mask, colour = gen(torch.zeros(6, 3, R, R), torch.arange(6), seed=0, seg=seg, return_color=True)
    assert set(gen.last_parts) <= {"nose", "mouth"}
    for b, name in enumerate(gen.last_parts):
        part = torch.isin(seg[b, 0], torch.tensor(gen.parts[name]))
        m = mask[b, 0] > 0
        assert (m & part).sum() == part.sum(), f"sample {b}: the {name} is not fully under the strokes"
        ys, xs = part.nonzero(as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        pad = max(h, w) // 2 + 6
        box = torch.zeros_like(m)
        box[
            max(int(ys.min()) - pad, 0) : int(ys.max()) + pad + 1, max(int(xs.min()) - pad, 0) : int(xs.max()) + pad + 1
        ] = True
        assert not (m & ~box).any(), f"sample {b}: strokes far from the {name}"
        assert m.sum() < 4 * h * w  # a few strokes over one part, not a training-size mask
        c = colour[b, 0] > 0
        assert c.any() and not (c & ~m).any()  # colour strokes inside the mask, thinner
        assert c.sum() < 0.7 * m.sum()


def test_user_strokes_without_labels_use_the_priors():
    gen = UserStrokeMask()
    m = gen(torch.zeros(12, 3, 512, 512), torch.arange(12), seed=1)
    assert set(gen.last_parts) <= set(gen.priors)
    for b, name in enumerate(gen.last_parts):
        cx, cy = gen.priors[name][:2]
        ys, xs = (m[b, 0] > 0).nonzero(as_tuple=True)
        assert abs(xs.double().mean() - cx) < 12 and abs(ys.double().mean() - cy) < 12, name
    again = gen(torch.zeros(12, 3, 512, 512), torch.arange(12), seed=1)
    assert torch.equal(m, again)


def test_pipeline_user_strokes_colour_only_on_strokes():
    seg = _face_seg(4)
    synth = FaceInputSynthesizer(mask=UserStrokeMask(), color=ColorMapExtractor(bilateral_iterations=1))
    img = torch.rand(4, 3, R, R) * 2 - 1
    out = synth({"image": img, "seg": seg, "index": torch.arange(4)}, epoch=0, seed=0)
    _, strokes = synth.mask(img, list(range(4)), epoch=0, seed=0, seg=seg, return_color=True)
    assert ((out["color"] != 0).any(1, keepdim=True) <= (strokes > 0)).all()
    assert (out["sketch"][out["mask"] == 0] == 0).all()


def test_user_strokes_on_celebamask_labels():
    from PIL import Image

    files = sorted(shared_data("faces/celebamask_mini/train/masks").glob("*.png"))[:8]
    seg = torch.stack([torch.from_numpy(np.array(Image.open(f))).long()[None] for f in files])
    gen = UserStrokeMask()
    m = gen(torch.zeros(8, 3, 512, 512), torch.arange(8), seg=seg)
    for b, name in enumerate(gen.last_parts):
        part = torch.isin(seg[b, 0], torch.tensor(gen.parts[name]))
        assert (part & (m[b, 0] > 0)).sum() >= 0.98 * part.sum(), name
