"""evaluate.py: LPIPS / NIQE columns, network interpolation, face editing, JSON, wandb table.

Networks are random weights files built here (not trained): the numbers are then meaningless as quality figures,
but every value is checked against a direct computation of the same protocol.  The LPIPS backbone (AlexNet) and the
FID Inception are RANDOM weights files built here too, because ImageNet weights cannot be downloaded on the test
machines: they exercise the loading and the plumbing, not the perceptual meaning.
"""

import json
import urllib.error
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_png

from evaluation.faces import read_user_mask
from evaluation.run import evaluate
from evaluation.scoring import build_fid_metric

TINY_G = ["model.generator.num_feat=8", "model.generator.num_block=1", "model.generator.num_grow_ch=4"]
# face_data (celeba_hq) sketches with HED: ~1 s CPU per 128 px face; these tests are about the rows, not the detector
CLASSIC_SKETCH = "face_data.synthesis.sketch.hed_weights=null"


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(9 * x + seed), np.cos(7 * y), np.sin(5 * (x + y))], -1) * 0.35 + 0.5
    return (img * 255 + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)


def _sr_dirs(tmp_path):
    # "big": two images with two 96x96 NIQE blocks each after the 4-px crop (with data.gt_mod=4: the default 12 would
    # crop them to 96 rows); "small": too small for NIQE.
    for i in range(2):
        write_png(tmp_path / "big" / f"b{i}.png", _image(104, 200, i))
    write_png(tmp_path / "small" / "s.png", _image(48, 48, 5))
    return tmp_path / "big", tmp_path / "small"


def _rrdb_file(path, seed, **kw):
    from archs.rrdbnet import RRDBNet

    torch.manual_seed(seed)
    net = RRDBNet(**({"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 4} | kw))
    with torch.no_grad():  # random init outputs ~0 (black after clamping): lift it to a textured mid-grey
        net.conv_last.weight.mul_(8)
        net.conv_last.bias.fill_(0.5)
    sd = net.state_dict()
    torch.save({"params": sd, "params_ema": sd}, path)
    return path, net.eval()


def _random_alexnet_file(path):
    # RANDOM AlexNet features standing in for the ImageNet backbone (offline test machines).
    import torchvision

    torch.manual_seed(0)
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in feats.items()}, path)
    return path


def _random_inception_file(path):
    # RANDOM weights for torch-fidelity's FID Inception (the real file is downloaded, which tests cannot do).
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with (
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None),
        mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}),
    ):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------------- super-resolution


def test_sr_with_lpips_and_niqe_matches_direct_computation(tmp_path, monkeypatch, capsys):
    from pytorch_lightning.loggers import WandbLogger

    from datamodules.sr_datamodule import SRValDataset, make_lr
    from metrics.lpips import build_lpips
    from metrics.niqe import calculate_niqe
    from metrics.sr_metrics import tensor_to_uint8

    big, small = _sr_dirs(tmp_path)
    weights, net = _rrdb_file(tmp_path / "g.pth", 0)
    alex = _random_alexnet_file(tmp_path / "alex.pth")
    tables = []
    real_log_table = WandbLogger.log_table
    monkeypatch.setattr(
        WandbLogger,
        "log_table",
        lambda self, key, columns=None, data=None, **kw: (
            tables.append((key, columns, data)) or real_log_table(self, key, columns=columns, data=data, **kw)
        ),
    )
    out = tmp_path / "m.json"
    cfg = compose_cfg(
        tmp_path / "eval",
        [
            "model=esrgan",
            *TINY_G,
            f"ckpt_path={weights}",
            f"data.test_dirs=[{big},{small}]",
            f"metrics_file={out}",
            "metrics.lpips.enabled=true",
            f"metrics.lpips.backbone_weights={alex}",
            "metrics.niqe.enabled=true",
            "logger=wandb",
            "data.gt_mod=4",
        ],
        config_name="eval",
    )
    rows = evaluate(cfg)
    saved = json.loads(out.read_text())
    assert saved == rows and list(saved) == ["big", "small"]
    assert set(saved["big"]) == {"images", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips", "niqe"}
    assert saved["small"]["niqe"] is None  # undefined (one 40x40 image), reported as null, not invented

    # The same protocol by hand: quantised SR and HR, 4-px crop; NIQE of the SR alone.
    lp = build_lpips("alex", str(alex))
    ds = SRValDataset(big, 4)
    niqes, lpipses = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            gt = ds[i]["gt"][None]
            sr = net(make_lr(gt, 4))
            niqes.append(calculate_niqe(sr, crop_border=4))
            q = [(tensor_to_uint8(t).float() / 255)[..., 4:-4, 4:-4] for t in (sr, gt)]
            lpipses.append(float(lp(*q)))
    assert saved["big"]["niqe"] == pytest.approx(np.mean(niqes), rel=1e-9)
    assert saved["big"]["lpips"] == pytest.approx(np.mean(lpipses), rel=1e-5)

    printed = capsys.readouterr().out
    assert "LPIPS" in printed and "NIQE" in printed and "n/a" in printed
    assert "Perceptual Index" in printed and "not reported" in printed  # said plainly, no invented column
    # wandb received the same table.
    assert len(tables) == 1
    key, columns, data = tables[0]
    assert key == "eval/metrics" and columns[:2] == ["row", "images"]
    assert [dict(zip(columns, r)) for r in data] == [{"row": k, **v} for k, v in rows.items()]


def test_defaults_keep_the_basicsr_columns_and_lpips_errors_are_clear(tmp_path, monkeypatch):
    import torchvision

    big, _ = _sr_dirs(tmp_path)
    rows = evaluate(compose_cfg(tmp_path / "a", ["model=bicubic", f"data.test_dirs=[{big}]"], config_name="eval"))
    assert set(rows["big"]) == {"images", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torchvision.models.AlexNet_Weights, "get_state_dict", offline)
    cfg = compose_cfg(
        tmp_path / "b", ["model=bicubic", f"data.test_dirs=[{big}]", "metrics.lpips.enabled=true"], config_name="eval"
    )
    with pytest.raises(FileNotFoundError, match=r"torch hub cache .*metrics\.lpips\.backbone_weights="):
        evaluate(cfg)
    cfg = compose_cfg(
        tmp_path / "c",
        [
            "model=bicubic",
            f"data.test_dirs=[{big}]",
            "metrics.lpips.enabled=true",
            "metrics.lpips.net_type=vgg",
            "metrics.lpips.backbone_weights=/no/vgg.pth",
        ],
        config_name="eval",
    )
    with pytest.raises(FileNotFoundError, match=r"/no/vgg\.pth.*imagenet"):
        evaluate(cfg)


def test_interpolation_rows_per_alpha_and_endpoints(tmp_path):
    big, _ = _sr_dirs(tmp_path)
    pa, _ = _rrdb_file(tmp_path / "psnr.pth", 0)
    pb, _ = _rrdb_file(tmp_path / "gan.pth", 1)
    out = tmp_path / "interp.json"
    cfg = compose_cfg(
        tmp_path / "i",
        [
            "model=esrgan",
            *TINY_G,
            f"interp.psnr_weights={pa}",
            f"interp.gan_weights={pb}",
            "interp.alphas=[0,0.5,1]",
            f"data.test_dirs=[{big}]",
            f"metrics_file={out}",
            "data.gt_mod=4",
        ],
        config_name="eval",
    )
    rows = evaluate(cfg)
    assert list(rows) == ["alpha=0/big", "alpha=0.5/big", "alpha=1/big"]
    assert json.loads(out.read_text()) == rows
    assert all("niqe" in r and r["niqe"] is not None for r in rows.values())  # NIQE on by default here

    # alpha = 0 and 1 are exactly the two models evaluated on their own.
    for alpha, path in (("0", pa), ("1", pb)):
        single = evaluate(
            compose_cfg(
                tmp_path / f"s{alpha}",
                [
                    "model=esrgan",
                    *TINY_G,
                    f"ckpt_path={path}",
                    f"data.test_dirs=[{big}]",
                    "metrics.niqe.enabled=true",
                    "data.gt_mod=4",
                ],
                config_name="eval",
            )
        )
        assert rows[f"alpha={alpha}/big"] == single["big"]
    assert rows["alpha=0.5/big"]["psnr_y"] not in (rows["alpha=0/big"]["psnr_y"], rows["alpha=1/big"]["psnr_y"])

    pw, _ = _rrdb_file(tmp_path / "wide.pth", 2, num_feat=16)
    bad = compose_cfg(
        tmp_path / "x",
        ["model=esrgan", *TINY_G, f"interp.psnr_weights={pa}", f"interp.gan_weights={pw}", f"data.test_dirs=[{big}]"],
        config_name="eval",
    )
    with pytest.raises(ValueError, match=r"shapes differ: .*weight"):
        evaluate(bad)
    half = compose_cfg(
        tmp_path / "y", ["model=esrgan", f"interp.psnr_weights={pa}", f"data.test_dirs=[{big}]"], config_name="eval"
    )
    with pytest.raises(ValueError, match="interp.gan_weights"):
        evaluate(half)


# ------------------------------------------------------------------------------------------------- face editing


def _face_ckpt(path, noise_type=None, **recorded):
    """A checkpoint laid out as train.py writes it (hyper_parameters.generator + net_g.* weights), random G;
    ``recorded``: hyper-parameters train.py adds at fit start (sketch_detector, sketch_hed_weights)."""
    from lightning_modules.scfegan_module import SCFEGANModule

    torch.manual_seed(0)
    m = SCFEGANModule(
        generator={"_target_": "archs.scfegan_generator.SCFEGANGenerator", "cnum": 4},
        discriminator={"_target_": "archs.sn_patch_discriminator.SNPatchDiscriminator", "cnum": 4},
        loss={
            "alpha": 6.0,
            "sigma": 0.05,
            "gamma": 120.0,
            "upsilon": 0.1,
            "beta": 0.001,
            "theta": 10.0,
            "epsilon": 0.001,
        },
        optim={"lr_g": 1e-4, "lr_d": 1e-4, "betas": [0.5, 0.999]},
        iters=1,
        vgg_weights="random",
        noise_type=noise_type,
    )
    sd = {k: v for k, v in m.state_dict().items() if not k.startswith("cri_vgg.")}
    torch.save({"state_dict": sd, "hyper_parameters": {**dict(m.hparams), **recorded}}, path)
    return path


def test_face_editing_synthesised_and_user_masks_with_lpips_and_fid(tmp_path, capsys):
    faces = tmp_path / "faces"
    for i in range(3):
        write_png(faces / f"{i:03d}.png", _image(128, 128, i))
    rect = np.zeros((128, 128), np.uint8)
    rect[32:96, 40:100] = 255  # white = erased
    write_png(tmp_path / "masks" / "000.png", rect)
    big = np.zeros((256, 256), np.uint8)
    big[64:192, 80:200] = 255  # drawn at twice the size: resized to the model's resolution
    write_png(tmp_path / "masks" / "001.png", big)
    ckpt = _face_ckpt(tmp_path / "g.ckpt")
    out = tmp_path / "faces.json"
    cfg = compose_cfg(
        tmp_path / "ev",
        [
            "model=scfegan",
            f"ckpt_path={ckpt}",
            f"data.test_dir={faces}",
            f"data.user_mask_dir={tmp_path / 'masks'}",
            "face_data.resolution=128",
            CLASSIC_SKETCH,
            "face_data.num_workers=0",
            "face_data.val_batch_size=4",
            "metrics.lpips.enabled=true",
            f"metrics.lpips.backbone_weights={_random_alexnet_file(tmp_path / 'a.pth')}",
            f"metrics.fid.inception_weights={_random_inception_file(tmp_path / 'inception.pth')}",
            "metrics.fid.feature=64",  # the 2048-d FID's 2048x2048 eigen-decomposition costs seconds on CPU
            f"metrics_file={out}",
        ],
        config_name="eval",
    )
    with pytest.warns(UserWarning, match="1 of 3 test images have no user mask"):
        rows = evaluate(cfg)
    assert json.loads(out.read_text()) == rows
    bins = [k for k in rows if k.startswith("faces/cov_")]
    assert list(rows) == ["faces", *bins, "faces/user_strokes", "faces/user_masks"]
    assert rows["faces"]["images"] == 3 and rows["faces/user_masks"]["images"] == 2
    assert rows["faces/user_strokes"]["images"] == 3
    assert sum(rows[k]["images"] for k in bins) == 3
    expected = {"images", "coverage", "l1", "psnr", "ssim", "l1_mask", "psnr_mask", "ssim_mask", "lpips", "fid"}
    for key, row in rows.items():
        assert set(row) == (expected - {"fid"} if key in bins else expected)
        assert all(v is not None and np.isfinite(v) for v in row.values())
        # The composite equals the input outside the mask: the errors live in the masked region.
        assert row["psnr_mask"] < row["psnr"] and row["l1_mask"] > row["l1"]
    # Both user masks erase the same 64x60 of 128x128 pixels, so the whole-image L1 is the region L1 times that share.
    user = rows["faces/user_masks"]
    assert user["l1"] == pytest.approx(user["l1_mask"] * (64 * 60) / 128**2, rel=1e-9)
    printed = capsys.readouterr().out
    assert "FID" in printed and "seed 0 + val_seed_offset" in printed


def test_face_helpers_fail_clearly(tmp_path, monkeypatch):
    # FID without weights: a plain note, no number.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    notes = []
    cfg = compose_cfg(tmp_path / "a", ["model=scfegan"], config_name="eval")
    assert build_fid_metric(cfg, torch.device("cpu"), notes) is None
    assert "FID was not computed" in notes[0] and "metrics.fid.inception_weights" in notes[0]
    # A user mask must have its image's aspect ratio.
    img = write_png(tmp_path / "i.png", np.zeros((64, 64, 3), np.uint8))
    mask = write_png(tmp_path / "m.png", np.zeros((64, 32), np.uint8))
    with pytest.raises(ValueError, match=r"m\.png is 32x64 .* i\.png is 64x64"):
        read_user_mask(Path(mask), Path(img), 128)
    # No checkpoint / no test folder.
    with pytest.raises(ValueError, match="ckpt_path"):
        evaluate(cfg)
    ckpt = _face_ckpt(tmp_path / "g.ckpt")
    cfg = compose_cfg(tmp_path / "b", ["model=scfegan", f"ckpt_path={ckpt}"], config_name="eval")
    with pytest.raises(ValueError, match="data.test_dir"):
        evaluate(cfg)


def test_face_data_config_held_out_split(tmp_path):
    # data=<face config> without data.test_dir: its held-out split (here 1 of the shipped demo images), row "val".
    ckpt = _face_ckpt(tmp_path / "g.ckpt")
    cfg = compose_cfg(
        tmp_path / "ev",
        [
            "model=scfegan",
            f"ckpt_path={ckpt}",
            "data=faces_demo",
            "data.num_val=1",
            "data.num_workers=0",
            "metrics.fid.enabled=false",
        ],
        config_name="eval",
    )
    rows = evaluate(cfg)
    assert [k for k in rows if not k.startswith("val/cov_")] == ["val", "val/user_strokes"]
    assert rows["val"]["images"] == 1
    assert set(rows["val"]) == {"images", "coverage", "l1", "psnr", "ssim", "l1_mask", "psnr_mask", "ssim_mask"}


def test_face_rows_per_mask_coverage_bin(tmp_path, capsys):
    """Rows per coverage bin (0-10 %, ..., 50-60 %): the same images regrouped; the bins' image-weighted means are
    the all-image row's, and each bin's mean coverage lies inside the bin."""
    faces = tmp_path / "faces"
    for i in range(8):
        write_png(faces / f"{i:03d}.png", _image(128, 128, i))
    ckpt = _face_ckpt(tmp_path / "g.ckpt")
    out = tmp_path / "m.json"
    cfg = compose_cfg(
        tmp_path / "ev",
        [
            "model=scfegan",
            f"ckpt_path={ckpt}",
            f"data.test_dir={faces}",
            "face_data.resolution=128",
            CLASSIC_SKETCH,
            "face_data.num_workers=0",
            "face_data.val_batch_size=3",
            "metrics.fid.enabled=false",
            "user_strokes.enabled=false",
            f"metrics_file={out}",
        ],
        config_name="eval",
    )
    rows = evaluate(cfg)
    assert json.loads(out.read_text()) == rows
    bins = {k: v for k, v in rows.items() if k != "faces"}
    assert bins and all(k.startswith("faces/cov_") for k in bins)
    assert sum(r["images"] for r in bins.values()) == rows["faces"]["images"] == 8
    for key in ("l1", "l1_mask", "coverage", "ssim"):
        mean = sum(r[key] * r["images"] for r in bins.values()) / 8
        assert mean == pytest.approx(rows["faces"][key], rel=1e-9)
    for key, r in bins.items():
        lo, hi = (float(v) / 100 for v in key.split("cov_")[1].rstrip("%").split("-"))
        assert lo < r["coverage"] <= hi + 1e-12
    printed = capsys.readouterr().out
    assert "faces/cov_" in printed and "Liu et al. 2018" in printed


def test_face_noise_follows_the_weights_and_mismatch_warns(tmp_path, capsys):
    faces = tmp_path / "faces"
    for i in range(2):
        write_png(faces / f"{i:03d}.png", _image(128, 128, i))
    ckpt = _face_ckpt(tmp_path / "g.ckpt", noise_type="binary16")
    base = [
        "model=scfegan",
        f"ckpt_path={ckpt}",
        f"data.test_dir={faces}",
        "face_data.resolution=128",
        CLASSIC_SKETCH,
        "face_data.num_workers=0",
        "metrics.fid.enabled=false",
        "user_strokes.enabled=false",
        "coverage_bins=[]",
    ]
    # data.synthesis.noise_type is gaussian (the default), the weights say binary16: binary16 is used
    rows = evaluate(compose_cfg(tmp_path / "a", base, config_name="eval"))
    assert "noise: binary16 (recorded with the weights" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="trained with noise_type='binary16'"):
        other = evaluate(compose_cfg(tmp_path / "b", base + ["noise=gaussian"], config_name="eval"))
    assert other["faces"]["l1_mask"] != rows["faces"]["l1_mask"]  # the noise channel did change
    # weights without a record: the data config's noise, said so
    plain = _face_ckpt(tmp_path / "p.ckpt")
    evaluate(compose_cfg(tmp_path / "c", base[:1] + [f"ckpt_path={plain}"] + base[2:], config_name="eval"))
    assert "weights record no noise_type" in capsys.readouterr().out


def test_face_sketches_follow_the_weights_detector_and_an_override_wins(tmp_path, capsys):
    """Issue 22: face_data (celeba_hq) asks for HED, but weights trained on classic sketches are evaluated on classic
    sketches (no HED fetch); sketch_detector=... overrides it with a warning; a bad record is an error naming it."""
    faces = tmp_path / "faces"
    for i in range(2):
        write_png(faces / f"{i:03d}.png", _image(128, 128, i))
    ckpt = _face_ckpt(tmp_path / "g.ckpt", sketch_detector="classic")
    base = [
        "model=scfegan",
        f"ckpt_path={ckpt}",
        f"data.test_dir={faces}",
        "face_data.resolution=128",
        "face_data.num_workers=0",
        "metrics.fid.enabled=false",
        "user_strokes.enabled=false",
        "coverage_bins=[]",
    ]
    with mock.patch("weights.hed_keras.load_hed_weights", side_effect=AssertionError("HED must not load")):
        auto = evaluate(compose_cfg(tmp_path / "a", base, config_name="eval"))
        assert "sketch: classic (recorded with the weights" in capsys.readouterr().out
        same = evaluate(compose_cfg(tmp_path / "b", base + ["sketch_detector=classic"], config_name="eval"))
        with pytest.warns(UserWarning, match="'canny'.*trained on 'classic' sketches"):
            other = evaluate(compose_cfg(tmp_path / "c", base + ["sketch_detector=canny"], config_name="eval"))
        # the data config naming a detector is an explicit choice too
        cfg = compose_cfg(tmp_path / "d", base + ["face_data.synthesis.sketch.detector=canny"], config_name="eval")
        with pytest.warns(UserWarning, match="synthesis.sketch.detector=canny"):
            from_data = evaluate(cfg)
    assert "sketch: canny (sketch_detector=canny" in capsys.readouterr().out
    assert same == auto
    assert other["faces"]["l1_mask"] != auto["faces"]["l1_mask"]  # the sketch channel did change
    assert from_data == other
    # weights without a record: the data config's sketch settings (here the documented classic override)
    plain = _face_ckpt(tmp_path / "p.ckpt")
    cfg = compose_cfg(tmp_path / "e", [*base[:1], f"ckpt_path={plain}", *base[2:], CLASSIC_SKETCH], config_name="eval")
    assert evaluate(cfg) == auto
    assert "weights record no sketch_detector" in capsys.readouterr().out
    # a record naming no detector, or HED weights by a path (never followed), is an error naming the file
    bad = _face_ckpt(tmp_path / "bad.ckpt", sketch_detector="__import__('os')")
    with pytest.raises(ValueError, match=r"bad\.ckpt.*sketch_detector"):
        evaluate(compose_cfg(tmp_path / "f", [*base[:1], f"ckpt_path={bad}", *base[2:]], config_name="eval"))
    hed = _face_ckpt(tmp_path / "hed.ckpt", sketch_detector="hed", sketch_hed_weights="/elsewhere/hed.weights.h5")
    cfg = compose_cfg(tmp_path / "g", [*base[:1], f"ckpt_path={hed}", *base[2:], CLASSIC_SKETCH], config_name="eval")
    with pytest.raises(ValueError, match=r"hed\.ckpt record '/elsewhere/hed\.weights\.h5'.*hed_weights="):
        evaluate(cfg)


def test_face_rows_draw_each_batch_sketch_once(tmp_path):
    """The synthesised, user-stroke (and mask-set) rows share one sketch per batch (HED costs ~1 s per
    128-px face): the extractor runs once per batch, and every row scores what a fresh sketch gives."""
    from evaluation.faces import SketchOncePerBatch
    from synthesis.sketch import SketchExtractor

    faces = tmp_path / "faces"
    for i in range(3):
        write_png(faces / f"{i:03d}.png", _image(128, 128, i))
    rect = np.zeros((128, 128), np.uint8)
    rect[32:96, 40:100] = 255
    write_png(tmp_path / "masks" / "000.png", rect)
    base = [
        "model=scfegan",
        f"ckpt_path={_face_ckpt(tmp_path / 'g.ckpt')}",
        f"data.test_dir={faces}",
        f"data.user_mask_dir={tmp_path / 'masks'}",
        "face_data.resolution=128",
        CLASSIC_SKETCH,
        "face_data.num_workers=0",
        "face_data.val_batch_size=2",
        "metrics.fid.enabled=false",
        "coverage_bins=[]",
    ]
    calls = []
    real = SketchExtractor.forward

    def counting(self, image):
        calls.append(image.shape[0])
        return real(self, image)

    with mock.patch.object(SketchExtractor, "forward", counting):
        once = evaluate(compose_cfg(tmp_path / "a", base, config_name="eval"))
    # two batches, one sketch each for the synthesised and user-stroke rows; the user-mask row takes the
    # sub-batch of images that have a user mask (000.png, in the first batch) and draws it for that one image
    assert calls == [2, 1, 1]
    # the same numbers as drawing the sketch anew for every row
    calls.clear()
    with mock.patch.object(SketchOncePerBatch, "forward", lambda self, image: self.inner(image)):
        with mock.patch.object(SketchExtractor, "forward", counting):
            fresh = evaluate(compose_cfg(tmp_path / "b", base, config_name="eval"))
    assert len(calls) > 2 and fresh == once
    # an image changed in place is drawn again
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    memo = SketchOncePerBatch(SketchExtractor(detector="canny"))
    first = memo(x)
    assert memo(x) is first and memo.detector == "canny"
    x.mul_(-1)
    assert memo(x) is not first
