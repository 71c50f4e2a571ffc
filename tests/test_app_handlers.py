"""The app's handlers (webui/handlers.py, webui/models.py) as plain functions: editor layers -> SC-FEGAN inputs,
results equal to the upload outside the mask bit for bit (8 and 16 bits), network interpolation equal to Eq. 4,
tiles, weights discovery under logs/, and page messages for bad input.  No Gradio needed."""

import functools
import os
import time

import numpy as np
import pytest
import torch
from app_fixtures import app_overrides, random_rgb, tiny_face_net, write_weights
from conftest import compose_cfg, write_png
from omegaconf import OmegaConf

from inference.face_align import edit_photo
from inference.faces import run_network
from inference.images import Image, read_image
from inference.tiling import upscale
from webui.handlers import (
    InputError,
    Limits,
    edit_face_editor,
    edit_face_files,
    edited_stem,
    load_mask_png,
    mask_png,
    open_image,
    resize_editor_mask,
    resize_mask,
    strokes_from_layers,
    upscale_file,
)
from webui.models import MissingWeights, ModelStore, run_resolution
from weights.interpolate import interpolate_state_dicts


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("w"))


@pytest.fixture
def store(tmp_path, weights):
    return ModelStore(compose_cfg(tmp_path, app_overrides(weights), config_name="app"))


def _layers(h, w):
    """Editor layers (RGBA uint8) as Gradio returns them: mask, sketch, colour."""
    mask, sketch, colour = (np.zeros((h, w, 4), np.uint8) for _ in range(3))
    mask[20:60, 10:50] = (255, 255, 255, 255)
    mask[60, 10:50, 3] = 40  # antialiased edge: partial coverage still counts
    sketch[30:50, 25, :] = (0, 0, 0, 255)
    sketch[5, 5:20] = (0, 0, 0, 255)  # outside the mask: ignored (reported)
    colour[35:45, 30:40] = (200, 30, 60, 255)
    colour[34, 30:40] = (200, 30, 60, 100)  # faint edge: not a colour stroke
    return [mask, sketch, colour]


def test_strokes_from_layers():
    mask, sketch, color = strokes_from_layers(_layers(72, 64), (72, 64))
    assert mask.dtype == bool and mask.sum() == 40 * 40 + 40
    assert sketch.sum() == 20 + 15 and not sketch[60, 10]
    assert color.shape == (72, 64, 3) and np.allclose(color[40, 35], np.array([200, 30, 60]) / 255)
    assert (color.max(axis=2) > 0).sum() == 100  # the faint edge row is not colour
    empty = [np.zeros((72, 64, 4), np.uint8)] * 3
    m, s, c = strokes_from_layers(empty, (72, 64))
    assert not m.any() and s is None and c is None
    m, s, c = strokes_from_layers([], (72, 64))  # an untouched editor
    assert m.shape == (72, 64) and not m.any()
    with pytest.raises(InputError, match=r"mask layer is 64x72 but the image is 60x72"):
        strokes_from_layers(_layers(72, 64), (72, 60))


def test_editor_edit_equals_upload_outside_mask_and_matches_predict(tmp_path, store):
    face = random_rgb(72, 64, seed=3)
    path = str(write_png(tmp_path / "face.png", face))
    out_path, msg = edit_face_editor(store, path, {"layers": _layers(72, 64)}, seed=5, out_dir=tmp_path / "o")
    out = read_image(out_path).pixels
    mask, sketch, color = strokes_from_layers(_layers(72, 64), (72, 64))
    assert out.shape == face.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], face[~mask])
    assert (out[mask] != face[mask]).any(axis=1).mean() > 0.9
    # the same as predict.py's path (edit_photo + run_network) on the same inputs (the app adds nothing of its own);
    # noise has no face: the crop around the mask, said in the message
    fm = store.face()
    assert fm.size == (128, 128)  # recorded in the weights file
    step = functools.partial(run_network, fm.net, noise="binary16", seed=5)
    direct = edit_photo(face, mask, sketch, color, step, fm.size, align=False)
    assert np.array_equal(out, direct.pixels)
    assert "Edited 64x72" in msg and "sketch strokes lie outside the mask" in msg
    assert "crop around the mask (no face found)" in msg
    # the seed matters (noise), and the sketch reaches the network
    other, _ = edit_face_editor(store, path, {"layers": _layers(72, 64)}, seed=6, out_dir=tmp_path / "o")
    assert not np.array_equal(read_image(other).pixels, out)
    no_sketch = edit_photo(face, mask, None, color, step, fm.size, align=False)
    assert not np.array_equal(no_sketch.pixels, direct.pixels)


def test_faces_detected_once_per_photo_not_per_upload(tmp_path, store, monkeypatch):
    """Each /edit_face call uploads a new copy of the photo: detection (MTCNN, 0.1-0.2 s at 512x512) runs once per
    photo content, again for other pixels, and the cached faces give the same result."""
    import webui.handlers as handlers

    calls = []
    real = handlers.detect_faces
    monkeypatch.setattr(handlers, "detect_faces", lambda px, **kw: calls.append(px.shape) or real(px, **kw))
    monkeypatch.setattr(handlers, "_FACES", {})
    face = random_rgb(72, 64, seed=5)
    mask = np.zeros((72, 64), np.uint8)
    mask[10:40, 20:60] = 255
    mp = write_png(tmp_path / "mask.png", mask)
    outs = []
    for k in range(3):  # the same photo under three names (three uploads)
        fp = write_png(tmp_path / f"copy{k}.png", face)
        out_path, _ = edit_face_files(store, str(fp), str(mp), None, None, seed=0, out_dir=tmp_path / f"o{k}")
        outs.append(read_image(out_path).pixels)
    assert calls == [(72, 64, 3)]
    assert all(np.array_equal(o, outs[0]) for o in outs)
    other = face.copy()
    other[0, 0, 0] ^= 1  # one pixel differs: another photo
    fp = write_png(tmp_path / "other.png", other)
    edit_face_files(store, str(fp), str(mp), None, None, seed=0, out_dir=tmp_path / "o3")
    assert len(calls) == 2


def test_api_edit_with_files_16_bit(tmp_path, store):
    face = random_rgb(72, 64, seed=4, dtype=np.uint16)
    mask = np.zeros((72, 64), np.uint8)
    mask[10:40, 20:60] = 255
    fp = write_png(tmp_path / "face16.png", face)
    mp = write_png(tmp_path / "mask.png", mask)
    out_path, _ = edit_face_files(store, str(fp), str(mp), None, None, seed=0, out_dir=tmp_path / "o")
    out = read_image(out_path).pixels
    assert out.dtype == np.uint16
    assert np.array_equal(out[mask == 0], face[mask == 0])
    assert (out[mask > 0] != face[mask > 0]).any(axis=1).mean() > 0.9


def test_bad_input_messages(tmp_path, store):
    face_p = str(write_png(tmp_path / "face.png", random_rgb(72, 64)))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match=r"'notes.png' is not an image this app can read"):
        edit_face_files(store, str(tmp_path / "notes.png"), face_p, out_dir=tmp_path)
    with pytest.raises(InputError, match=r"is 64x72 \(0.0 megapixels\); this app accepts at most 0.0"):
        open_image(face_p, "face image", max_pixels=1000)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x00" * (2 * 1024 * 1024 + 10))
    with pytest.raises(InputError, match=r"big.png' is 2.0 MB; the limit is 1 MB"):
        open_image(str(big), "image", 10**9, Limits(max_upload_mb=1))
    small_mask = write_png(tmp_path / "m.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match=r"mask 'm.png' is 32x32 but the input image is 64x72") as err:
        edit_face_files(store, face_p, str(small_mask), out_dir=tmp_path)
    assert str(tmp_path) not in str(err.value)  # file names, not server paths
    with pytest.raises(InputError, match="mask is empty"):
        edit_face_editor(store, face_p, {"layers": []}, out_dir=tmp_path)
    with pytest.raises(InputError, match="No face image"):
        edit_face_editor(store, None, {"layers": []}, out_dir=tmp_path)
    with pytest.raises(InputError, match=r"alpha must be in \[0, 1\]"):
        upscale_file(store, face_p, alpha=1.5, out_dir=tmp_path)
    huge = write_png(tmp_path / "huge.png", np.zeros((4097, 4096, 3), np.uint8))  # one row over 16 MP
    with pytest.raises(
        InputError,
        match=r"huge.png' is 4096x4097 \(16.8 megapixels\); this app accepts at most "
        r"16.8 megapixels here \(app limits.max_pixels_sr\)",
    ):
        upscale_file(store, str(huge), out_dir=tmp_path)  # refused from the header, before decoding


def test_upscale_interpolation_is_eq4_and_tiles_are_exact(tmp_path, store, weights):
    img = random_rgb(20, 24, seed=7)
    p = str(write_png(tmp_path / "lr.png", img))
    image = Image(img, 255.0, p)
    psnr, gan = weights["psnr_net"], weights["gan_net"]
    ends = {}
    for alpha, net in ((0.0, psnr), (1.0, gan)):
        out_path, msg = upscale_file(store, p, alpha=alpha, out_dir=tmp_path)
        ends[alpha] = read_image(out_path).pixels
        assert ends[alpha].shape == (80, 96, 3)
        assert np.array_equal(ends[alpha], upscale(net, image, 4, torch.device("cpu")))
    half = interpolate_state_dicts(psnr.state_dict(), gan.state_dict(), 0.3)
    ref = type(psnr)(num_feat=8, num_block=1, num_grow_ch=4).eval()
    ref.load_state_dict(half)
    out_path, msg = upscale_file(store, p, alpha=0.3, out_dir=tmp_path)
    assert np.array_equal(read_image(out_path).pixels, upscale(ref, image, 4, torch.device("cpu")))
    assert "alpha 0.3" in msg and not np.array_equal(ends[0.0], ends[1.0])
    tiled, msg = upscale_file(store, p, alpha=0.3, tile=8, out_dir=tmp_path)
    diff = np.abs(read_image(tiled).pixels.astype(int) - read_image(out_path).pixels.astype(int))
    assert diff.max() <= 1 and "tiles of 8" in msg  # float rounding at most one level (tile_pad=auto)


def test_weights_discovery_and_missing_message(tmp_path, weights):
    # Without weights or a demo run the SR tab runs Real-ESRGAN x4plus (a named model, loaded lazily)
    assert ModelStore(compose_cfg(tmp_path, ["device=cpu"], config_name="app")).sr_weights() == (
        "realesrgan-x4plus",
        None,
        "default_sr_weights=",
    )
    cfg = compose_cfg(tmp_path, ["device=cpu", "default_sr_weights=null"], config_name="app")
    store = ModelStore(cfg)
    status = store.preload()
    assert "weights=PATH" in status["face"] and "scfegan_demo" in status["face"]
    assert "sr_weights=PATH" in status["sr"]
    with pytest.raises(MissingWeights):
        store.face()
    # demo runs: the newest one wins; the face run's data.resolution sets the working size
    logs = tmp_path / "logs"
    for i, name in enumerate(("2026-01-01_00-00-00", "2026-01-02_00-00-00")):
        run = logs / "scfegan_demo" / "runs" / name
        (run / "checkpoints").mkdir(parents=True)
        net = tiny_face_net(seed=i)
        sd = {f"net_g_ema.{k}": v for k, v in net.state_dict().items()}
        torch.save(
            {
                "state_dict": sd,
                "hyper_parameters": {"generator": {"_target_": "archs.scfegan_generator.SCFEGANGenerator", "cnum": 4}},
            },
            run / "checkpoints" / "last.ckpt",
        )
        (run / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create({"data": {"resolution": 256}}), run / ".hydra" / "config.yaml")
        srun = logs / "demo" / "runs" / name / "weights"
        srun.mkdir(parents=True)
        for f in ("net_g_psnr.pth", "net_g_gan.pth"):
            (srun / f).write_bytes(weights["psnr"].read_bytes())
        t = time.time() - 100 + 10 * i
        for f in [run / "checkpoints" / "last.ckpt", srun / "net_g_psnr.pth", srun / "net_g_gan.pth"]:
            os.utime(f, (t, t))
    store = ModelStore(cfg)
    newest = str(logs / "scfegan_demo" / "runs" / "2026-01-02_00-00-00" / "checkpoints" / "last.ckpt")
    assert store.face_weights() == (newest, "newest demo run")
    assert run_resolution(newest) == 256
    assert store.face().size == (256, 256)
    gan, psnr, _ = store.sr_weights()
    assert gan.endswith("2026-01-02_00-00-00/weights/net_g_gan.pth") and psnr.endswith("net_g_psnr.pth")
    assert "PSNR" in store.preload()["sr"]


def test_incompatible_interpolation_pair_is_reported(tmp_path, weights):
    from app_fixtures import RRDBNet

    from weights.io import save_generator_weights

    save_generator_weights(tmp_path / "wide.pth", RRDBNet(num_feat=16, num_block=1, num_grow_ch=4))
    cfg = compose_cfg(
        tmp_path,
        ["device=cpu", f"sr_weights={weights['gan']}", f"sr_psnr_weights={tmp_path / 'wide.pth'}"],
        config_name="app",
    )
    msg = ModelStore(cfg).preload()["sr"]
    assert msg.startswith("Cannot load the ESRGAN weights") and "shapes differ" in msg


def test_noise_kind_recorded_in_the_weights_is_used(tmp_path):
    from weights.io import save_generator_file
    from weights.layouts import scfegan_config

    net = tiny_face_net(seed=3)
    w = save_generator_file(
        tmp_path / "g.pth", net, scfegan_config(net.state_dict()), {"input_size": 128, "noise_type": "gaussian"}
    )
    store = ModelStore(compose_cfg(tmp_path, ["device=cpu", f"weights={w}"], config_name="app"))
    assert store.face().noise == "gaussian" and "noise gaussian" in store.face().description
    face = random_rgb(64, 64, seed=8)
    path = str(write_png(tmp_path / "f.png", face))
    out_path, _ = edit_face_editor(store, path, {"layers": _layers(64, 64)}, seed=1, out_dir=tmp_path)
    mask, sketch, color = strokes_from_layers(_layers(64, 64), (64, 64))
    step = functools.partial(run_network, store.face().net, noise="gaussian", seed=1)
    ref = edit_photo(face, mask, sketch, color, step, (128, 128), align=False)
    assert np.array_equal(read_image(out_path).pixels, ref.pixels)


# -- iterative editing (issue 18) ---------------------------------------------------------------------------------------
def _disk_brute(mask: np.ndarray, n: int) -> np.ndarray:
    """Dilation (n > 0) / erosion (n < 0) by the disk dy^2 + dx^2 <= n^2, straight from the definition (outside the
    image counts as mask for erosion)."""
    r = abs(n)
    h, w = mask.shape
    pad = np.pad(mask, r, constant_values=n < 0)
    out = np.zeros_like(mask) if n > 0 else np.ones_like(mask)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                shifted = pad[r + dy : r + dy + h, r + dx : r + dx + w]
                out = out | shifted if n > 0 else out & shifted
    return out


def test_resize_mask_is_disk_dilation_and_erosion():
    # hand-computed: one pixel grown by 2 is the 13-pixel disk; shrunk by 2 again, its centre alone
    one = np.zeros((9, 9), bool)
    one[4, 4] = True
    disk = resize_mask(one, 2)
    want = np.zeros((9, 9), bool)
    want[3:6, 3:6] = True  # the 3x3 block (distances 0, 1, sqrt 2) and the four points at distance 2
    want[2, 4] = want[6, 4] = want[4, 2] = want[4, 6] = True
    assert disk.sum() == 13 and np.array_equal(disk, want)
    assert np.array_equal(resize_mask(disk, -2), one)
    # a 9x9 square shrunk by 2: the 5x5 centre; a band along the top border shrinks only from below
    sq = np.zeros((15, 15), bool)
    sq[3:12, 3:12] = True
    assert np.array_equal(np.argwhere(resize_mask(sq, -2)).min(0), [5, 5]) and resize_mask(sq, -2).sum() == 25
    band = np.zeros((10, 10), bool)
    band[:5] = True
    assert np.array_equal(resize_mask(band, -2), np.arange(10)[:, None].repeat(10, 1) < 3)
    # random masks, both ways, against the definition; 0, empty and full are returned unchanged
    rng = np.random.default_rng(0)
    m = rng.random((40, 50)) < 0.15
    m[10:25, 20:40] = True
    for n in (1, 3, 7, -1, -3):
        assert np.array_equal(resize_mask(m, n), _disk_brute(m, n)), n
    assert np.array_equal(resize_mask(m, 0), m)
    assert not resize_mask(np.zeros((5, 5), bool), 3).any() and resize_mask(np.ones((5, 5), bool), -3).all()


def test_mask_png_upload_grow_shrink_in_the_editor(tmp_path):
    face = random_rgb(72, 64, seed=8)
    fp = str(write_png(tmp_path / "face.png", face))
    layers = _layers(72, 64)
    mask = strokes_from_layers(layers, (72, 64))[0]
    # download: a PNG the size of the photo, 0 / 255, named after it
    mp, msg = mask_png(fp, {"layers": layers}, out_dir=tmp_path / "o")
    assert os.path.basename(mp) == "face_mask.png" and "64x72 PNG" in msg
    got = read_image(mp)
    assert got.gray and got.pixels.dtype == np.uint8 and set(np.unique(got.pixels)) == {0, 255}
    assert np.array_equal(got.pixels == 255, mask)
    # upload: it becomes the mask layer (opaque white), the sketch and colour layers are kept
    other = np.zeros((72, 64), np.uint8)
    other[5:15, 40:60] = 200  # >= half of full scale counts, as predict.py's mask=
    other[16, 40:60] = 100  # under half: not mask
    op = str(write_png(tmp_path / "other.png", other))
    ed, msg = load_mask_png(fp, {"layers": layers}, op)
    assert "other.png loaded" in msg and ed["background"].shape == (72, 64, 3)
    assert np.array_equal(ed["layers"][0][..., 3] > 0, other >= 128) and (ed["layers"][0][other >= 128] == 255).all()
    assert np.array_equal(ed["layers"][1], layers[1]) and np.array_equal(ed["layers"][2], layers[2])
    m2, s2, c2 = strokes_from_layers(ed["layers"], (72, 64))  # what Generate then reads
    assert np.array_equal(m2, other >= 128) and s2 is not None and c2 is not None
    bad = str(write_png(tmp_path / "small.png", other[:50]))
    with pytest.raises(InputError, match=r"^The mask 'small.png' is 64x50 but the photo 'face.png' is 64x72") as err:
        load_mask_png(fp, {"layers": layers}, bad)
    assert "\n" not in str(err.value) and str(tmp_path) not in str(err.value)
    # grow / shrink: the mask layer only, by a disk
    ed, msg = resize_editor_mask(fp, {"layers": layers}, 3)
    assert np.array_equal(ed["layers"][0][..., 3] > 0, resize_mask(mask, 3)) and msg.startswith("Mask grown by 3 px")
    assert np.array_equal(ed["layers"][1], layers[1])
    ed, msg = resize_editor_mask(fp, {"layers": layers}, -3)
    assert np.array_equal(ed["layers"][0][..., 3] > 0, resize_mask(mask, -3)) and "shrunk by 3 px" in msg
    with pytest.raises(InputError, match="mask is empty"):
        resize_editor_mask(fp, {"layers": []}, 2)
    with pytest.raises(InputError, match="between 1 and"):
        resize_editor_mask(fp, {"layers": layers}, 0)


def test_result_names_and_edit_of_an_edit_16_bit(tmp_path, store):
    assert edited_stem("/x/face.png") == "face_edited"
    assert edited_stem("face_edited.png") == "face_edited2" and edited_stem("a_edited9.png") == "a_edited10"
    # "Use result as input": the result file (not a re-rendered canvas) edited again; outside both masks the
    # original, 16 bits kept; the download names say which edit it is
    face = random_rgb(72, 64, seed=9, dtype=np.uint16)
    fp = str(write_png(tmp_path / "face.png", face))
    m1, m2 = (np.zeros((72, 64, 4), np.uint8) for _ in range(2))
    m1[10:30, 5:25] = 255
    m2[40:60, 30:55] = 255
    r1, _ = edit_face_editor(store, fp, {"layers": [m1]}, out_dir=tmp_path / "o")
    r2, _ = edit_face_editor(store, r1, {"layers": [m2]}, out_dir=tmp_path / "o")
    assert (os.path.basename(r1), os.path.basename(r2)) == ("face_edited.png", "face_edited2.png")
    o1, o2 = read_image(r1).pixels, read_image(r2).pixels
    keep = (m1[..., 3] == 0) & (m2[..., 3] == 0)
    assert o2.dtype == np.uint16 and np.array_equal(o2[keep], face[keep])
    assert np.array_equal(o2[m1[..., 3] > 0], o1[m1[..., 3] > 0])  # the first edit stays
    assert (o2[m2[..., 3] > 0] != o1[m2[..., 3] > 0]).any(axis=1).mean() > 0.9


@pytest.mark.slow
def test_upscale_photo_over_1mp_tile_by_tile_with_progress(tmp_path, store):
    """Issue 18: a photo over the old 1 MP limit is accepted by default and upscaled in tiles of
    ``limits.sr_auto_tile`` (tile 0 = automatic), one progress call per tile."""
    img = random_rgb(1000, 1100, seed=8)  # 1.1 MP
    p = str(write_png(tmp_path / "photo.png", img))
    calls = []
    shown = []
    out_path, msg = upscale_file(
        store, p, alpha=1.0, tile=0, out_dir=tmp_path, progress=lambda d, n: calls.append((d, n)), previews=shown
    )
    assert calls == [(k, 6) for k in range(1, 7)]  # 2 x 3 tiles of 512
    out = read_image(out_path).pixels
    assert out.shape == (4000, 4400, 3) and out.dtype == np.uint8
    assert "x4: 1100x1000 -> 4400x4000" in msg and "tiles of 512" in msg
    assert read_image(shown[0]).pixels.shape == (1862, 2048, 3)  # what the page shows; the download is full size


def test_upscale_tiles_equal_whole_image_gray_rgba_and_outscale(tmp_path):
    """``upscale_tiles`` (the SR tab's memory-bounded path) equals ``upscale`` up to float rounding, for gray, RGB
    and RGBA inputs and with the weights' own resize (outscale 2 and 3)."""
    from app_fixtures import tiny_sr_net

    from inference.tiling import upscale_tiles

    net = tiny_sr_net(3)
    rng = np.random.default_rng(9)
    for shape in ((37, 41), (50, 44, 3), (50, 44, 4)):
        img = Image(rng.integers(0, 256, shape, dtype=np.uint8), 255.0, "x.png")
        for outscale in (None, 2, 3):
            ref = upscale(net, img, 4, torch.device("cpu"), tile=0, outscale=outscale)
            got = upscale_tiles(net, img, 4, torch.device("cpu"), tile=16, outscale=outscale)
            assert got.shape == ref.shape and got.dtype == ref.dtype, (shape, outscale)
            assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, (shape, outscale)


def test_sr_tab_applies_the_weights_outscale(tmp_path):
    """Weights recording ``meta["outscale"]`` (realesr-animevideov3-x2 / -x3: the x4 network, then a bicubic
    resize) give results at that scale on the SR tab, as with predict.py."""
    from app_fixtures import tiny_sr_net

    from weights.io import save_generator_file
    from weights.layouts import rrdbnet_config

    net = tiny_sr_net(4)
    wp = save_generator_file(tmp_path / "x2.pth", net, rrdbnet_config(net.state_dict()), {"outscale": 2})
    store = ModelStore(compose_cfg(tmp_path, ["device=cpu", f"sr_weights={wp}"], config_name="app"))
    assert store.sr().outscale == 2 and store.sr().out_scale == 2
    img = random_rgb(30, 26, seed=10)
    p = str(write_png(tmp_path / "lr.png", img))
    out_path, msg = upscale_file(store, p, tile=8, out_dir=tmp_path)
    ref = upscale(net, Image(img, 255.0, p), 4, torch.device("cpu"), tile=0, outscale=2)
    out = read_image(out_path).pixels
    assert out.shape == (60, 52, 3) and np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    assert msg.startswith("x2 (x4 network, then bicubic): 26x30 -> 52x60") and out_path.endswith(".png")


def test_stroke_store_keeps_the_newest_complete_set_per_session():
    """webui.editor.StrokeStore: the editor posts one layer at a time; a set counts once all its layers arrived
    (a half-received newer set never replaces a complete older one), per session; a new photo resets it."""
    import io

    from PIL import Image as PILImage

    from webui.editor import StrokeStore

    def png(v):
        buf = io.BytesIO()
        PILImage.fromarray(np.full((4, 5, 4), v, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    st = StrokeStore(3)
    assert st.layers("a") == []
    for i in range(3):
        st.add("a", "id1", i, png(10 + i))
    st.add("a", "id2", 0, png(99))  # the next stroke, still on its way
    st.add("b", "idb", 0, png(7))
    got = st.layers("a")
    assert [int(x[0, 0, 0]) for x in got] == [10, 11, 12] and got[0].shape == (4, 5, 4)
    assert st.layers("b") == []
    for i in (2, 1):
        st.add("a", "id2", i, png(50 + i))
    assert [int(x[0, 0, 0]) for x in st.layers("a")] == [99, 51, 52]
    st.reset("a")
    assert st.layers("a") == []
    st.put("a", [np.full((4, 5, 4), 3, np.uint8)] * 3)  # layers a handler put into the editor
    assert [int(x[0, 0, 0]) for x in st.layers("a")] == [3, 3, 3]
