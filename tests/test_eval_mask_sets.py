"""evaluate.py eval_masks=DIR: fixed mask sets (scripts/make_eval_masks.py) read, checked and scored per preset and
per 10 % bin, with FID and KID (metrics/fid.py's per-row estimators equal torchmetrics' classes)."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_png
from test_evaluate import _face_ckpt, _image, _random_inception_file

from evaluation.mask_sets import read_mask_set, read_mask_sets
from evaluation.run import evaluate
from metrics.fid import fid_from_features, kid_from_features
from scripts.make_eval_masks import write_set


class _Features(torch.nn.Module):
    """Hands torchmetrics' FID / KID the given rows as the 'Inception features'."""

    num_features = 8

    def forward(self, x):
        return x.float()


def test_per_row_fid_and_kid_equal_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 8, generator=g), torch.randn(30, 8, generator=g) * 1.3 + 0.4
    fid = FrechetInceptionDistance(feature=_Features(), normalize=False)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert fid_from_features(real, fake) == pytest.approx(float(fid.compute()), rel=1e-6)
    # With subset_size = the smaller set, torchmetrics' subsets of the 30 fakes are all of them; one subset of the 40
    # reals differs per draw, so compare against the full-set estimator computed by hand (unbiased: no diagonal).
    kid = KernelInceptionDistance(feature=_Features(), subsets=1, subset_size=30, normalize=False)
    kid.update(real[:30], real=True)
    kid.update(fake, real=False)
    mean, std = kid_from_features(real[:30], fake, subsets=3, subset_size=1000)
    assert mean == pytest.approx(float(kid.compute()[0]), rel=1e-5) and std == pytest.approx(0.0, abs=1e-12)

    def k(a, b):
        return (a.double() @ b.double().t() / 8 + 1) ** 3

    m = 30
    kxx, kyy, kxy = k(real[:30], real[:30]), k(fake, fake), k(real[:30], fake)
    by_hand = (kxx.sum() - kxx.diag().sum() + kyy.sum() - kyy.diag().sum()) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    assert mean == pytest.approx(float(by_hand), rel=1e-9)
    # Seeded subsets: the same call gives the same value.
    assert kid_from_features(real, fake, subsets=4, subset_size=20) == kid_from_features(real, fake, 4, 20)
    with pytest.raises(ValueError, match="at least 2"):
        kid_from_features(real[:1], fake)


def test_mask_set_checks_fail_clearly(tmp_path):
    write_set("thick", 3, 64, 0, tmp_path / "thick")
    ms = read_mask_set(tmp_path / "thick", 64)
    assert ms.preset == "thick" and len(ms.files) == 3 and ms.mask(0).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="masks are 64x64 but the model evaluates at 128x128"):
        read_mask_set(tmp_path / "thick", 128)
    with pytest.raises(ValueError, match="holds 3 masks for 5 test images"):
        read_mask_sets(str(tmp_path / "thick"), 64, 5)
    with pytest.raises(FileNotFoundError, match="holds no manifest.json"):
        read_mask_set(tmp_path, 64)
    # A changed mask file: refused by name when read.
    f = ms.files[1]
    arr = np.zeros((64, 64), np.uint8)
    write_png(f, arr)
    with pytest.raises(ValueError, match=f"mask file {f} does not match the SHA-256"):
        read_mask_set(tmp_path / "thick", 64).mask(1)
    # A folder whose manifest another tool wrote; a newer generator version only warns (the hashes still hold).
    man = json.loads((tmp_path / "thick" / "manifest.json").read_text())
    (tmp_path / "thick" / "manifest.json").write_text(json.dumps(man | {"tool": "lama"}))
    with pytest.raises(ValueError, match="not written by scripts.make_eval_masks"):
        read_mask_set(tmp_path / "thick", 64)
    (tmp_path / "thick" / "manifest.json").write_text(json.dumps(man | {"generator_version": "mask_presets/0"}))
    with pytest.warns(UserWarning, match="generator_version 'mask_presets/0'"):
        read_mask_set(tmp_path / "thick", 64)
    write_set("thick", 3, 64, 1, tmp_path / "thick2")
    with pytest.raises(ValueError, match="two sets of preset 'thick'"):
        read_mask_sets([str(tmp_path / "thick"), str(tmp_path / "thick2")], 64, 3)


def test_evaluate_reads_mask_sets_per_preset_and_bin(tmp_path, capsys):
    faces = tmp_path / "faces"
    for i in range(4):
        write_png(faces / f"{i:03d}.png", _image(128, 128, i))
    m_thick = write_set("thick", 5, 128, 0, tmp_path / "masks" / "thick")  # one more mask than images: fine
    m_thin = write_set("thin", 4, 128, 3, tmp_path / "masks" / "thin")
    out = tmp_path / "m.json"
    cfg = compose_cfg(
        tmp_path / "ev",
        [
            "model=scfegan",
            f"ckpt_path={_face_ckpt(tmp_path / 'g.ckpt')}",
            f"data.test_dir={faces}",
            f"eval_masks=[{tmp_path / 'masks' / 'thick'},{tmp_path / 'masks' / 'thin'}]",
            "face_data.resolution=128",
            "face_data.num_workers=0",
            "face_data.val_batch_size=3",
            "coverage_bins=[]",
            "user_strokes.enabled=false",
            f"metrics.fid.inception_weights={_random_inception_file(tmp_path / 'inception.pth')}",
            "metrics.fid.feature=64",
            "metrics.fid.min_images=3",
            f"metrics_file={out}",
        ],
        config_name="eval",
    )
    rows = evaluate(cfg)
    assert json.loads(out.read_text()) == rows
    for preset, man in (("thick", m_thick), ("thin", m_thin)):
        row = rows[f"faces/{preset}"]
        assert row["images"] == 4
        # Mask k on image k: the row's mean coverage is that of the manifest's first four masks.
        assert row["coverage"] == pytest.approx(np.mean([f["coverage"] for f in man["files"][:4]]), abs=1e-9)
        assert row["fid"] is not None and row["kid"] is not None and np.isfinite(row["kid"])
        bins = {k: r for k, r in rows.items() if k.startswith(f"faces/{preset}/cov_")}
        assert sum(r["images"] for r in bins.values()) == 4
        expected = {f"faces/{preset}/cov_{f['bin']}" for f in man["files"][:4]}
        assert set(bins) == expected
        for key, r in bins.items():
            assert set(r) == set(row)
            assert (r["fid"] is None) == (r["images"] < 3)  # metrics.fid.min_images
            assert (r["kid"] is None) == (r["images"] < 2)
            mean = r["coverage"]
            lo, hi = (float(v) / 100 for v in key.split("cov_")[1].rstrip("%").split("-"))
            assert lo < mean <= hi + 1e-12 or (lo == 0 and mean >= 0)
        assert row["psnr_mask"] < row["psnr"] and row["l1_mask"] > row["l1"]
    printed = capsys.readouterr().out
    assert "FID only for rows of at least 3 images" in printed and "SHA-256 checked" in printed
