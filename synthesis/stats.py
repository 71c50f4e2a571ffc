"""Statistics of synthesised SC-FEGAN inputs (``scripts/render_synthesis.py`` writes them as JSON).

* mask coverage: fraction of erased pixels per image, and a histogram over the Liu et al. 2018 hole-ratio
  categories (plus < 1 % and > 60 %);
* edge density: fraction of sketch pixels in the whole image (the sketch extractor's output before x M) and inside
  the mask (the sketch channel G gets);
* colour regions: connected components of constant colour (4-connectivity, colours compared at 8 bits) of the
  whole colour map, before x M.  They work on whatever the pipeline's sketch / colour extractors return.
"""

from __future__ import annotations

import numpy as np
import torch

COVERAGE_EDGES = (0.0, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0)


def coverage_histogram(coverage, edges=COVERAGE_EDGES) -> list[dict]:
    """``[{"range": [lo, hi], "count": n, "fraction": f}]`` over (lo, hi] (the first bin also holds lo)."""
    cov = np.asarray(coverage, dtype=np.float64)
    out = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = ((cov > lo) | ((cov >= lo) if k == 0 else False)) & (cov <= hi)
        n = int(sel.sum())
        out.append({"range": [float(lo), float(hi)], "count": n, "fraction": n / len(cov) if len(cov) else 0.0})
    return out


def count_color_regions(color: torch.Tensor | np.ndarray) -> int:
    """Connected components of constant colour in one colour map ([3, H, W] or [H, W, 3], any range)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    c = color.detach().float().cpu().numpy() if torch.is_tensor(color) else np.asarray(color, dtype=np.float32)
    if c.ndim == 3 and c.shape[0] == 3 and c.shape[2] != 3:
        c = c.transpose(1, 2, 0)
    lo, hi = float(c.min()), float(c.max())
    q = np.round((c - lo) / (hi - lo) * 255.0).astype(np.int64) if hi > lo else np.zeros(c.shape, np.int64)
    key = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
    h, w = key.shape
    idx = np.arange(h * w).reshape(h, w)
    right = key[:, 1:] == key[:, :-1]
    down = key[1:, :] == key[:-1, :]
    rows = np.concatenate([idx[:, :-1][right], idx[:-1, :][down]])
    cols = np.concatenate([idx[:, 1:][right], idx[1:, :][down]])
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(h * w, h * w))
    return int(connected_components(graph, directed=False)[0])


def synthesis_stats(batch: dict, synthesis=None) -> dict:
    """Statistics of a synthesised batch (see the module docstring).  ``synthesis``: the
    :class:`~synthesis.pipeline.FaceInputSynthesizer` that made it, for the whole-image sketch and colour maps."""
    mask = batch["mask"].float()
    n = mask.shape[0]
    coverage = mask.flatten(1).mean(1).double().cpu().tolist()
    sketch_in_mask = batch["sketch"].float().flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)
    stats = {
        "images": n,
        "resolution": list(mask.shape[-2:]),
        "mask_coverage": {
            "per_image": coverage,
            "mean": float(np.mean(coverage)),
            "median": float(np.median(coverage)),
            "histogram": coverage_histogram(coverage),
        },
        "edge_density": {"in_mask_per_image": sketch_in_mask.double().cpu().tolist()},
        "color_regions": {},
    }
    if synthesis is not None:
        image = batch["image"]
        seg = batch.get("seg")
        seg = seg if seg is not None and bool((seg >= 0).any()) else None
        with torch.no_grad():
            sketch = synthesis.sketch(image).float()
            color = synthesis.color(image, seg).float()
        density = (sketch > 0).flatten(1).double().mean(1).cpu().tolist()
        regions = [count_color_regions(color[i]) for i in range(n)]
        stats["edge_density"].update(per_image=density, mean=float(np.mean(density)))
        stats["color_regions"] = {"per_image": regions, "mean": float(np.mean(regions))}
    return stats
