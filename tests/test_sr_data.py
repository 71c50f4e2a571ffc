"""SR data: folder scanning, the documented bad-image policy, LR synthesis on the batch."""

import warnings

import numpy as np
import pytest
import torch

from conftest import write_png
from datamodules.image_io import BadImageError, list_images, read_image
from datamodules.sr_datamodule import SRDataModule, SRTrainDataset, SRValDataset, make_lr
from ops.imresize import imresize


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_reads_gray_rgba_and_16bit_as_float_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgba = np.dstack([_rgb(8, 8), np.full((8, 8), 7, np.uint8)])
    deep = (np.arange(192, dtype=np.uint16).reshape(8, 8, 3) * 300 + 1)
    g = read_image(write_png(tmp_path / "g.png", gray))
    a = read_image(write_png(tmp_path / "a.png", rgba))
    d = read_image(write_png(tmp_path / "d.png", deep))
    assert g.shape == a.shape == d.shape == (8, 8, 3) and g.dtype == np.float32
    np.testing.assert_allclose(g[..., 0], gray / 255.0, atol=1e-7)
    np.testing.assert_array_equal(g[..., 0], g[..., 2])  # replicated
    np.testing.assert_allclose(a, rgba[..., :3] / 255.0, atol=1e-7)  # alpha dropped, RGB order kept
    np.testing.assert_allclose(d, deep / 65535.0, atol=1e-7)  # 16 bits kept, no 8-bit round trip


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path):
    write_png(tmp_path / "ok.png", _rgb(40, 40))
    write_png(tmp_path / "gray.png", _rgb(40, 40)[..., 0])
    write_png(tmp_path / "small.png", _rgb(20, 40))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.warns(UserWarning) as record:
        ds = SRTrainDataset([tmp_path], gt_size=32)
    messages = " ".join(str(r.message) for r in record)
    assert "corrupt.png" in messages and "small.png" in messages and "smaller than the 32x32 crop" in messages
    assert sorted(p.name for p in ds.files) == ["gray.png", "ok.png"]
    item = ds[0]
    assert item["gt"].shape == (3, 32, 32)


def test_bad_files_raise_when_asked(tmp_path):
    write_png(tmp_path / "ok.png", _rgb(40, 40))
    (tmp_path / "corrupt.png").write_bytes(b"garbage")
    with pytest.raises(BadImageError, match="corrupt.png"):
        SRTrainDataset([tmp_path], gt_size=32, on_bad_image="error")


def test_truncated_pixels_are_caught_when_decoding(tmp_path):
    good = write_png(tmp_path / "a_good.png", _rgb(40, 40, 1))
    bad = write_png(tmp_path / "b_trunc.png", _rgb(40, 40, 2))
    bad.write_bytes(bad.read_bytes()[:200])  # header intact, pixel data cut
    ds = SRTrainDataset([tmp_path], gt_size=32)
    assert len(ds.files) == 2  # passes the header scan
    with pytest.warns(UserWarning, match="b_trunc.png"):
        item = ds[1]  # falls back to the next image
    assert item["gt"].shape == (3, 32, 32)
    ds.on_bad_image = "error"
    with pytest.raises(BadImageError, match="b_trunc.png"):
        ds[1]
    assert good.exists()


def test_empty_or_missing_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match="empty.*holds no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        list_images(tmp_path / "nowhere")


def test_nested_folders_and_extensions(tmp_path):
    write_png(tmp_path / "a" / "b" / "x.png", _rgb(8, 8))
    import cv2

    cv2.imwrite(str(tmp_path / "a" / "y.jpg"), _rgb(8, 8))
    cv2.imwrite(str(tmp_path / "z.bmp"), _rgb(8, 8))
    cv2.imwrite(str(tmp_path / "w.webp"), _rgb(8, 8))
    assert sorted(p.name for p in list_images(tmp_path)) == ["w.webp", "x.png", "y.jpg", "z.bmp"]


def test_val_images_are_modcropped_and_lr_is_made_on_the_batch(tmp_path):
    write_png(tmp_path / "v.png", _rgb(43, 37))
    ds = SRValDataset(tmp_path, scale=4)
    gt = ds[0]["gt"]
    assert gt.shape == (3, 40, 36)
    dm = SRDataModule(train_dirs=[tmp_path], val_dirs=[tmp_path], scale=4, gt_size=32)
    batch = dm.on_after_batch_transfer({"gt": gt[None]}, 0)
    assert batch["lq"].shape == (1, 3, 10, 9)
    expected = (imresize(gt[None], 0.25).clamp(0, 1) * 255).round() / 255
    torch.testing.assert_close(batch["lq"], expected)
    assert torch.equal(batch["lq"], make_lr(gt[None], 4))
    # 8-bit levels, like a stored LR PNG
    assert torch.equal((batch["lq"] * 255).round(), batch["lq"] * 255)


def test_premade_lr_pairs_are_aligned(tmp_path):
    hr = _rgb(64, 64, 3)
    write_png(tmp_path / "HR" / "0001.png", hr)
    lr = (imresize(torch.from_numpy(hr).permute(2, 0, 1).double()[None] / 255, 0.25)[0].clamp(0, 1) * 255).round()
    write_png(tmp_path / "LR" / "0001x4.png", lr.permute(1, 2, 0).numpy().astype(np.uint8))
    ds = SRTrainDataset([tmp_path / "HR"], [tmp_path / "LR"], scale=4, gt_size=32, use_hflip=False, use_rot=False)
    item = ds[0]
    assert item["gt"].shape == (3, 32, 32) and item["lq"].shape == (3, 8, 8)
    # Find where the LR crop came from: it must be the same region as the HR crop.
    full_lr = torch.from_numpy(read_image(tmp_path / "LR" / "0001x4.png")).permute(2, 0, 1)
    full_hr = torch.from_numpy(read_image(tmp_path / "HR" / "0001.png")).permute(2, 0, 1)
    hits = [(t, l) for t in range(9) for l in range(9) if torch.equal(full_lr[:, t:t + 8, l:l + 8], item["lq"])]
    assert hits
    t, l = hits[0]
    assert torch.equal(full_hr[:, 4 * t:4 * t + 32, 4 * l:4 * l + 32], item["gt"])
    with pytest.raises(FileNotFoundError, match="no LR image"):
        write_png(tmp_path / "HR" / "0002.png", hr)
        SRTrainDataset([tmp_path / "HR"], [tmp_path / "LR"], scale=4, gt_size=32)


def test_augmentations_cover_flips_and_transpose_and_differ_per_item(tmp_path):
    write_png(tmp_path / "a.png", _rgb(32, 32, 5))
    ds = SRTrainDataset([tmp_path], gt_size=32, enlarge_ratio=64)
    assert len(ds) == 64
    base = torch.from_numpy(read_image(tmp_path / "a.png")).permute(2, 0, 1)
    variants = {
        "id": base, "h": base.flip(-1), "v": base.flip(-2), "t": base.transpose(-1, -2),
    }
    seen = set()
    for i in range(64):
        gt = ds[i]["gt"]
        for k, v in variants.items():
            if torch.equal(gt, v):
                seen.add(k)
    assert {"id", "h", "v", "t"} <= seen
