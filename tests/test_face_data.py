"""SC-FEGAN face data: label formats, landmarks, split, bad files, the data module and its Hydra configs."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA, shared_data
from PIL import Image

from datamodules.face_datamodule import (
    CELEBAMASK_PARTS,
    FaceDataModule,
    FaceDataset,
    combine_parts,
    detect_label_format,
    read_landmarks,
    scan_per_part,
)
from datamodules.image_io import read_label_map
from synthesis.color import ColorMapExtractor
from synthesis.pipeline import FaceInputSynthesizer

RES = 64
PALETTE = [int(v) for v in np.random.default_rng(0).integers(0, 256, 768)]


def _fast_synth():
    return FaceInputSynthesizer(color=ColorMapExtractor(bilateral_iterations=1))


def _label_map(size, seed):
    """A 19-class map with overlapping-looking structure (hair on top, skin, eyes, ...)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((size, size), np.uint8)
    lab[size // 4 :, size // 8 : 7 * size // 8] = 1
    lab[: size // 4 + rng.integers(0, 4)] = 13
    lab[size // 2 : size // 2 + 3, size // 4 : size // 4 + 5] = 5
    lab[size // 2 : size // 2 + 3, 3 * size // 4 - 5 : 3 * size // 4] = 4
    lab[3 * size // 4 :, : size // 3] = 18
    lab[rng.integers(0, size, 20), rng.integers(0, size, 20)] = rng.integers(0, 19, 20)
    return lab


def _save_palette(path, lab):
    im = Image.fromarray(lab, mode="P")
    im.putpalette(PALETTE)
    im.save(path)


def _write_per_part(root: Path, ident: int, lab: np.ndarray):
    folder = root / str(ident // 2000)
    folder.mkdir(parents=True, exist_ok=True)
    for label in range(1, 19):
        part = (lab == label).astype(np.uint8) * 255
        if part.any():  # absent part = absent file, as in CelebAMask-HQ
            cv2.imwrite(str(folder / f"{ident:05d}_{CELEBAMASK_PARTS[label - 1]}.png"), part)


@pytest.fixture
def face_tree(tmp_path):
    """CelebA-HQ-like tree: images 0..5 (96 px), single-file maps and per-part maps of the same labels."""
    img_dir, single, per_part = tmp_path / "CelebA-HQ-img", tmp_path / "single", tmp_path / "anno"
    for d in (img_dir, single, per_part):
        d.mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(6):
        cv2.imwrite(str(img_dir / f"{i}.jpg"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
        lab = _label_map(48, i)  # label maps at half the image size, as CelebAMask-HQ (512 for 1024 images)
        labels[i] = lab
        _save_palette(single / f"{i}.png", lab)
        _write_per_part(per_part, i, lab)
    return tmp_path, labels


# ---------------------------------------------------------------------------------------------------------------
# annotations
# ---------------------------------------------------------------------------------------------------------------


def test_label_formats_identical(face_tree):
    root, labels = face_tree
    assert detect_label_format(root / "single") == "single"
    assert detect_label_format(root / "anno") == "per_part"
    index = scan_per_part(root / "anno")
    for i, lab in labels.items():
        assert np.array_equal(combine_parts(index[i]), lab)
        assert np.array_equal(read_label_map(root / "single" / f"{i}.png"), lab)
    segs = {}
    for fmt, d in (("single", "single"), ("per_part", "anno"), ("auto", "anno"), ("auto2", "single")):
        dm = FaceDataModule(
            str(root / "CelebA-HQ-img"),
            label_dir=str(root / d),
            label_format=fmt.rstrip("2"),
            num_val=2,
            resolution=RES,
            hflip=False,
            num_workers=0,
            synthesis=False,
        )
        dm.setup()
        segs[fmt] = torch.stack([dm.train_set[k]["seg"] for k in range(len(dm.train_set))])
        assert segs[fmt].shape == (4, 1, RES, RES) and segs[fmt].min() >= 0
    for fmt in ("per_part", "auto", "auto2"):
        assert torch.equal(segs[fmt], segs["single"])


def test_per_part_later_parts_overwrite(tmp_path):
    d = tmp_path / "0"
    d.mkdir()
    skin = np.full((8, 8), 255, np.uint8)
    hair = np.zeros((8, 8), np.uint8)
    hair[:3] = 255
    cv2.imwrite(str(d / "00000_skin.png"), skin)
    cv2.imwrite(str(d / "00000_hair.png"), hair)
    lab = combine_parts(scan_per_part(tmp_path)[0])
    assert (lab[:3] == 13).all() and (lab[3:] == 1).all()


def test_celebamask_mini_mask_as_per_part(tmp_path):
    masks = shared_data("faces", "celebamask_mini", "train", "masks")
    src = sorted(masks.glob("*.png"))[0]
    lab = read_label_map(src)
    _write_per_part(tmp_path, 7, lab)
    assert np.array_equal(combine_parts(scan_per_part(tmp_path)[7]), lab)


def test_landmarks_scale_and_hflip(face_tree):
    root, _ = face_tree
    lm = root / "landmarks.txt"
    lm.write_text(
        "6\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y\n"
        + "".join(f"{i}.jpg 30 40 60 40 45 60\n" for i in range(6))
    )
    table = read_landmarks(lm)
    assert np.allclose(table["3"], [[30, 40], [60, 40]])
    files = sorted((root / "CelebA-HQ-img").glob("*.jpg"))
    ds = FaceDataset(files, eyes=[table["0"]] * 6, resolution=48)
    eyes = ds[0]["eyes"]
    assert torch.allclose(eyes, torch.tensor([[14.75, 19.75], [29.75, 19.75]]))  # (x + .5) * 48/96 - .5
    flip = FaceDataset(files[:1], labels=[root / "single" / "0.png"], eyes=[table["0"]], resolution=48, hflip=True)
    plain = FaceDataset(files[:1], labels=[root / "single" / "0.png"], eyes=[table["0"]], resolution=48)
    # The flip is drawn per sample from (seed, epoch, index) (datamodules/samplers.py): the same key gives the same
    # answer every time; another epoch, another draw.
    assert torch.equal(flip[(0, 0)]["image"], flip[(0, 0)]["image"])
    for epoch in range(20):  # until the coin says flip
        item = flip[(0, epoch)]
        if not torch.equal(item["image"], plain[0]["image"]):
            break
    assert torch.allclose(item["image"], plain[0]["image"].flip(-1))
    assert torch.allclose(item["eyes"], torch.tensor([[47 - 29.75, 19.75], [47 - 14.75, 19.75]]))
    seg_f, seg_p = item["seg"][0], plain[0]["seg"][0].flip(-1)
    swap = {4: 5, 5: 4, 6: 7, 7: 6, 8: 9, 9: 8}
    assert (seg_p == 5).any() and torch.equal(seg_f, seg_p.clone().apply_(lambda v: swap.get(v, v)))


# ---------------------------------------------------------------------------------------------------------------
# split and bad files
# ---------------------------------------------------------------------------------------------------------------


def test_split_seeded_and_split_file(face_tree):
    root, _ = face_tree
    kw = dict(resolution=RES, num_workers=0, synthesis=False)
    a = FaceDataModule(str(root / "CelebA-HQ-img"), num_val=2, split_seed=1, **kw)
    b = FaceDataModule(str(root / "CelebA-HQ-img"), num_val=2, split_seed=1, **kw)
    a.setup(), b.setup()
    assert a.val_set.files == b.val_set.files and len(a.val_set) == 2 and len(a.train_set) == 4
    assert not set(a.val_set.files) & set(a.train_set.files)
    split = root / "val.txt"
    split.write_text("# val\n1.jpg\n4\n")
    c = FaceDataModule(str(root / "CelebA-HQ-img"), split_file=str(split), **kw)
    c.setup()
    assert [p.name for p in c.val_set.files] == ["1.jpg", "4.jpg"]


def test_bad_images_skipped_with_warning(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(4):
        cv2.imwrite(str(d / f"good{i}.png"), np.full((80, 80, 3), 100, np.uint8))
    (d / "corrupt.jpg").write_bytes(b"not an image at all")
    cv2.imwrite(str(d / "tiny.png"), np.zeros((16, 16, 3), np.uint8))
    dm = FaceDataModule(str(d), num_val=1, resolution=RES, num_workers=0, synthesis=False)
    with pytest.warns(UserWarning) as rec:
        dm.setup()
    text = " ".join(str(w.message) for w in rec)
    assert "corrupt.jpg" in text and "tiny.png" in text
    names = {p.name for p in dm.train_set.files + dm.val_set.files}
    assert names == {f"good{i}.png" for i in range(4)}
    strict = FaceDataModule(str(d), num_val=1, resolution=RES, num_workers=0, synthesis=False, on_bad_image="error")
    with pytest.raises(ValueError, match="corrupt.jpg|tiny.png"):
        strict.setup()


def test_label_map_wrong_size_errors(face_tree):
    root, _ = face_tree
    _save_palette(root / "single" / "2.png", np.zeros((48, 30), np.uint8))
    ds = FaceDataset([root / "CelebA-HQ-img" / "2.jpg"], labels=[root / "single" / "2.png"], resolution=RES)
    with pytest.raises(ValueError, match="2.png"):
        ds[0]


# ---------------------------------------------------------------------------------------------------------------
# data module on celebamask_mini
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_dm():
    root = shared_data("faces", "celebamask_mini", "train")
    dm = FaceDataModule(
        str(root / "images"),
        label_dir=str(root / "masks"),
        num_val=50,
        resolution=RES,
        batch_size=4,
        val_batch_size=4,
        num_workers=0,
        pin_memory=False,
        synthesis=_fast_synth(),
    )
    dm.setup()
    return dm


def test_celebamask_mini_batches(mini_dm):
    assert len(mini_dm.train_set) == 950 and len(mini_dm.val_set) == 50
    assert mini_dm.train_set.label_format == "single"
    batch = next(iter(mini_dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, RES, RES) and batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["seg"].dtype == torch.long and batch["seg"].min() >= 0 and batch["seg"].max() <= 18
    assert torch.isnan(batch["eyes"]).all()
    out = mini_dm.synthesize(dict(batch), train=True, epoch=0)
    for key, ch in (("mask", 1), ("sketch", 1), ("color", 3), ("noise", 1)):
        assert out[key].shape == (4, ch, RES, RES)
    assert (out["sketch"] * (1 - out["mask"])).abs().sum() == 0
    # eyes from the l_eye / r_eye centroids: near the README's (203, 245) / (309, 245) at 512
    eyes = out["eye_positions"] * 512 / RES
    assert (eyes[..., 1] - 245).abs().max() < 60
    # Eye 0 is the r_eye (5) centroid, eye 1 the l_eye (4) one, of the (flipped, label-swapped) map.  Not simply
    # "x < 256": some CelebAMask-HQ annotations have the two eye labels the other way round (e.g. image 575).
    for b in range(4):
        for k, label in enumerate((5, 4)):
            ys, xs = torch.nonzero(batch["seg"][b, 0] == label, as_tuple=True)
            if len(xs):
                assert abs(float(out["eye_positions"][b, k, 0]) - float(xs.float().mean())) < 1.0
    assert (eyes[:, 0, 0] < eyes[:, 1, 0]).sum() >= 3  # most faces: r_eye on the image's left
    other_epoch = mini_dm.synthesize(dict(batch), train=True, epoch=1)
    assert not torch.equal(other_epoch["mask"], out["mask"])


def test_validation_masks_fixed(mini_dm):
    batch = next(iter(mini_dm.val_dataloader()))
    first = mini_dm.on_after_batch_transfer(dict(batch), 0)  # no trainer attached: validation mode
    second = mini_dm.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(first["mask"], second["mask"]) and torch.equal(first["noise"], second["noise"])
    train = mini_dm.synthesize(dict(batch), train=True, epoch=0)
    assert not torch.equal(train["mask"], first["mask"])  # a separate validation seed


def test_training_mode_uses_trainer_epoch(mini_dm, monkeypatch):
    class FakeTrainer:
        training = True
        current_epoch = 5

    batch = next(iter(mini_dm.val_dataloader()))
    monkeypatch.setattr(mini_dm, "trainer", FakeTrainer(), raising=False)
    got = mini_dm.on_after_batch_transfer(dict(batch), 0)
    want = mini_dm.synthesize(dict(batch), train=True, epoch=5)
    assert torch.equal(got["mask"], want["mask"])


# ---------------------------------------------------------------------------------------------------------------
# Hydra configs
# ---------------------------------------------------------------------------------------------------------------


def _compose(tmp_path, data_cfg):
    from hydra import compose, initialize_config_dir

    (tmp_path / "primary.yaml").write_text(
        f"defaults:\n  - data: {data_cfg}\n  - _self_\n"
        f"hydra:\n  searchpath:\n    - file://{REPO / 'conf'}\n"
        f"seed: 3\npaths:\n  data_dir: {tmp_path / 'data'}\n  shared_data_dir: {SHARED_DATA}\n"
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        return compose(config_name="primary")


def test_hydra_celeba_hq_config(tmp_path):
    from hydra.utils import instantiate

    cfg = _compose(tmp_path, "celeba_hq")
    assert cfg.data.resolution == 512 and cfg.data.num_val == 1000 and cfg.data.label_format == "per_part"
    assert cfg.data.image_dir.endswith("CelebA-HQ/CelebA-HQ-img")
    assert cfg.data.label_dir.endswith("CelebA-HQ/CelebAMask-HQ-mask-anno")
    synth = instantiate(cfg.data.synthesis)
    assert isinstance(synth, FaceInputSynthesizer)
    assert synth.mask.free_form.max_draw == 20 and synth.mask.hair_prob == 0.35
    assert synth.sketch.min_component_size == 5 and synth.color.bilateral_iterations == 20
    # the config spells out the class defaults
    default = FaceInputSynthesizer()
    for (name, a), (_, b) in zip(synth.named_modules(), default.named_modules()):
        pa = {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "training"}
        pb = {k: v for k, v in vars(b).items() if not k.startswith("_") and k != "training"}
        assert pa == pb, name
    dm = instantiate(cfg.data)  # no files are touched before setup()
    assert isinstance(dm, FaceDataModule) and dm.seed == 3 and dm.synthesis is not None


def test_hydra_celebamask_mini_config(tmp_path):
    from hydra.utils import instantiate

    shared_data("faces", "celebamask_mini")
    cfg = _compose(tmp_path, "celebamask_mini")
    assert cfg.data.num_val == 50 and cfg.data.label_format == "single"
    dm = instantiate(cfg.data, resolution=RES, num_workers=0, pin_memory=False, batch_size=2)
    dm.setup()
    assert len(dm.val_set) == 50
    out = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert {"mask", "sketch", "color", "noise"} <= set(out)


@pytest.mark.slow
def test_lightning_fit_calls_synthesis(face_tree):
    """Under a real Trainer: train batches get trainer.current_epoch, validation batches the fixed seed/epoch."""
    import pytorch_lightning as pl

    root, _ = face_tree
    seen = {"train": [], "val": [], "train_same_epoch": [], "train_other_epoch": []}

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, idx):
            seen["train"].append((self.current_epoch, batch["index"].tolist(), batch["mask"].sum().item()))
            raw = {k: batch[k] for k in ("image", "seg", "eyes", "index")}
            same = dm.synthesize(dict(raw), train=True, epoch=self.current_epoch)["mask"]
            other = dm.synthesize(dict(raw), train=True, epoch=self.current_epoch + 1)["mask"]
            seen["train_same_epoch"].append(torch.equal(same, batch["mask"]))
            seen["train_other_epoch"].append(torch.equal(other, batch["mask"]))
            return (self.w * batch["mask"].mean()).sum()

        def validation_step(self, batch, idx):
            seen["val"].append((batch["index"].tolist(), batch["mask"].sum().item()))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    dm = FaceDataModule(
        str(root / "CelebA-HQ-img"),
        label_dir=str(root / "anno"),
        num_val=2,
        resolution=RES,
        batch_size=2,
        val_batch_size=2,
        num_workers=1,
        pin_memory=False,
        synthesis=_fast_synth(),
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(Probe(), datamodule=dm)
    assert len(seen["train"]) == 4 and {e for e, _, _ in seen["train"]} == {0, 1}
    # sanity check + 2 validation epochs: identical validation masks every time
    assert len(seen["val"]) == 3 and len({s for _, s in seen["val"]}) == 1
    want = dm.synthesize(next(iter(dm.val_dataloader())), train=False)["mask"].sum().item()
    assert seen["val"][0][1] == want
    assert all(seen["train_same_epoch"]) and not any(seen["train_other_epoch"])
