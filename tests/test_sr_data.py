"""SR data: folder scanning, the documented bad-image policy, LR synthesis on the batch."""

import numpy as np
import pytest
import torch
from conftest import write_png

from datamodules.image_io import BadImageError, list_images, read_image
from datamodules.sr_datamodule import SRDataModule, SRTrainDataset, SRValDataset, augment, lr_from_context, make_lr
from ops.imresize import imresize, support_margin


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_reads_gray_rgba_and_16bit_as_float_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgba = np.dstack([_rgb(8, 8), np.full((8, 8), 7, np.uint8)])
    deep = np.arange(192, dtype=np.uint16).reshape(8, 8, 3) * 300 + 1
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
    hits = [(t, l) for t in range(9) for l in range(9) if torch.equal(full_lr[:, t : t + 8, l : l + 8], item["lq"])]
    assert hits
    t, l = hits[0]
    assert torch.equal(full_hr[:, 4 * t : 4 * t + 32, 4 * l : 4 * l + 32], item["gt"])
    with pytest.raises(FileNotFoundError, match="no LR image"):
        write_png(tmp_path / "HR" / "0002.png", hr)
        SRTrainDataset([tmp_path / "HR"], [tmp_path / "LR"], scale=4, gt_size=32)


def test_augmentations_cover_flips_and_transpose_and_differ_per_item(tmp_path):
    write_png(tmp_path / "a.png", _rgb(32, 32, 5))
    ds = SRTrainDataset([tmp_path], gt_size=32, enlarge_ratio=64)
    assert len(ds) == 64
    base = torch.from_numpy(read_image(tmp_path / "a.png")).permute(2, 0, 1)
    variants = {
        "id": base,
        "h": base.flip(-1),
        "v": base.flip(-2),
        "t": base.transpose(-1, -2),
    }
    seen = set()
    for i in range(64):
        gt = ds[i]["gt"]
        for k, v in variants.items():
            if torch.equal(gt, v):
                seen.add(k)
    assert {"id", "h", "v", "t"} <= seen


# ---------------------------------------------------------------- LR from a crop with margin (issue 10, items 3, 4, 7)
def _textured(h, w, seed=0):
    """Smooth waves plus noise: large level differences between neighbours, as in real textures."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 5.0
    base = np.stack([np.sin(x + y), np.cos(0.7 * y - x), np.sin(0.4 * x * y)], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def _crops_vs_whole_lr(tmp_path, margin, n=40):
    """(max level difference, share of differing LR values) between the training LR and the crop of the whole
    image's LR at the same place, over n random crops of one 62x54 image (not a multiple of 4: mod-cropped)."""
    write_png(tmp_path / "a.png", _textured(62, 54))
    full = torch.from_numpy(read_image(tmp_path / "a.png")).permute(2, 0, 1)[:, :60, :52]
    whole_lr = make_lr(full[None].double(), 4)[0]
    ds = SRTrainDataset(
        [tmp_path], scale=4, gt_size=16, use_hflip=False, use_rot=False, enlarge_ratio=n, lr_margin=margin
    )
    worst, differ, total = 0, 0, 0
    for i in range(n):
        item = ds[i]
        if margin:
            gt, lq = lr_from_context(item["gt_ctx"][None].double(), 4, margin)
        else:
            gt = item["gt"][None].double()
            lq = make_lr(gt, 4)
        hits = [
            (t, l)
            for t in range(0, 45, 4)
            for l in range(0, 37, 4)
            if torch.equal(full[:, t : t + 16, l : l + 16].double(), gt[0])
        ]
        assert len(hits) == 1  # aligned to the scale: the crop sits on the LR grid
        t, l = hits[0]
        ref = whole_lr[:, t // 4 : t // 4 + 4, l // 4 : l // 4 + 4]
        levels = ((lq[0] - ref).abs() * 255).round()
        worst, differ, total = max(worst, int(levels.max())), differ + int((levels > 0).sum()), total + levels.numel()
    return worst, differ / total


def test_training_lr_equals_the_crop_of_the_whole_image_lr(tmp_path):
    assert support_margin(4) == 8 and support_margin(2) == 4  # the x4 kernel reaches 6 HR px past a block
    worst, share = _crops_vs_whole_lr(tmp_path / "m", support_margin(4))
    assert worst <= 1 and share < 0.01  # float rounding of a .5 only
    # The LR of the bare crop (the old way) differs on its outer rings: the test can tell.
    worst0, share0 = _crops_vs_whole_lr(tmp_path / "b", 0)
    assert worst0 > 5 and share0 > 0.2
    worst4, _ = _crops_vs_whole_lr(tmp_path / "s", 4)  # a margin short of the support is not enough
    assert worst4 > 1


def test_margin_crop_shapes_and_datamodule_transfer(tmp_path):
    write_png(tmp_path / "a.png", _textured(40, 40))
    dm = SRDataModule(
        train_dirs=[tmp_path],
        val_dirs=[tmp_path],
        scale=4,
        gt_size=16,
        batch_size=2,
        num_workers=0,
        dataset_enlarge_ratio=4,
    )
    assert dm.lr_margin == 8  # "auto"
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"gt_ctx"} and batch["gt_ctx"].shape == (2, 3, 32, 32)
    out = dm.on_after_batch_transfer(batch, 0)
    assert set(out) == {"gt", "lq"} and out["gt"].shape == (2, 3, 16, 16) and out["lq"].shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="lr_margin"):
        SRDataModule(train_dirs=[tmp_path], val_dirs=[tmp_path], scale=4, gt_size=16, lr_margin=6)


def test_unaligned_crops_may_start_anywhere(tmp_path):
    write_png(tmp_path / "a.png", _textured(40, 40))
    ds = SRTrainDataset(
        [tmp_path], scale=4, gt_size=16, use_hflip=False, use_rot=False, enlarge_ratio=64, align_crop=False
    )
    full = torch.from_numpy(read_image(tmp_path / "a.png")).permute(2, 0, 1)
    tops = set()
    for i in range(64):
        gt = ds[i]["gt"]
        tops |= {t for t in range(25) for l in range(25) if torch.equal(full[:, t : t + 16, l : l + 16], gt)}
    assert any(t % 4 for t in tops)


def test_augment_is_basicsr_order_hflip_vflip_transpose():
    x = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    (y,) = augment([x], True, True, True)
    assert np.array_equal(y, x[:, ::-1][::-1].transpose(1, 0, 2))


@pytest.mark.parametrize(
    "use_hflip,use_rot,expected",
    [
        (True, False, {"id", "h"}),  # BasicSR: hflip alone never flips vertically
        (False, True, {"id", "v", "t", "vt"}),  # rotation = vflip and transpose
        (True, True, {"id", "h", "v", "t", "hv", "ht", "vt", "hvt"}),
    ],
)
def test_vflip_belongs_to_rotation_as_in_basicsr(tmp_path, use_hflip, use_rot, expected):
    write_png(tmp_path / "a.png", _rgb(16, 16, 5))
    ds = SRTrainDataset([tmp_path], gt_size=16, enlarge_ratio=96, use_hflip=use_hflip, use_rot=use_rot)
    base = torch.from_numpy(read_image(tmp_path / "a.png")).permute(2, 0, 1)
    h, v, t = (lambda z: z.flip(-1)), (lambda z: z.flip(-2)), (lambda z: z.transpose(-1, -2))
    variants = {
        "id": base,
        "h": h(base),
        "v": v(base),
        "t": t(base),
        "hv": v(h(base)),
        "ht": t(h(base)),
        "vt": t(v(base)),
        "hvt": t(v(h(base))),
    }
    seen = {k for i in range(96) for k, val in variants.items() if torch.equal(ds[i]["gt"], val)}
    assert seen == expected


def test_gt_mod_crops_validation_hr(tmp_path):
    write_png(tmp_path / "v.png", _rgb(43, 37))
    assert SRValDataset(tmp_path, scale=4, gt_mod=12)[0]["gt"].shape == (3, 36, 36)
    assert SRValDataset(tmp_path, scale=4)[0]["gt"].shape == (3, 40, 36)
    with pytest.raises(ValueError, match="gt_mod"):
        SRValDataset(tmp_path, scale=4, gt_mod=6)
    dm = SRDataModule(train_dirs=[tmp_path], val_dirs=[tmp_path], test_dirs=[tmp_path], scale=4, gt_size=16, gt_mod=12)
    dm.setup("test")
    assert dm.test_sets[0][0]["gt"].shape == (3, 36, 36) and dm.test_names == [tmp_path.name]
