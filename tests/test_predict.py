"""predict.py: ESRGAN tiling, precision, awkward images and names; SC-FEGAN editing that leaves unmasked pixels
unchanged bit for bit; BGR handling of converted official weights; clear errors."""

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_png

from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SCFEGANGenerator
from inference.faces import edit_face
from inference.images import Image, read_image
from inference.run import predict
from inference.tiling import receptive_margin, tiled_forward
from weights.io import save_generator_file, save_generator_weights
from weights.layouts import basicsr_to_esrgan_layout, rrdbnet_config

TINY = dict(num_feat=8, num_block=1, num_grow_ch=4)


def tiny_net(seed=0, **kw):
    torch.manual_seed(seed)
    net = RRDBNet(**{**TINY, **kw}).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        net.conv_last.bias.fill_(0.5)  # outputs around mid-gray, so clamping does not hide differences
    return net


# -- tiling -----------------------------------------------------------------------------------------------------------
def test_receptive_margin():
    assert receptive_margin(RRDBNet(**TINY)) == 19
    assert receptive_margin(RRDBNet(**{**TINY, "scale": 2})) == 38
    with torch.device("meta"):
        assert receptive_margin(RRDBNet()) == 349  # the 23-block ESRGAN


@pytest.mark.slow
@pytest.mark.parametrize("scale,size,tile", [(4, (37, 45), 16), (2, (36, 46), 15)])
def test_tiled_equals_untiled_with_pad_at_least_the_margin(scale, size, tile):
    net = tiny_net(scale=scale)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    unit = 1 if scale == 4 else 2
    whole = tiled_forward(net, x, scale)
    tiled = tiled_forward(net, x, scale, tile=tile, tile_pad=receptive_margin(net), unit=unit)
    assert tiled.shape == whole.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert (tiled - whole).abs().max().item() < 1e-5  # float rounding only; the requirement is 1/255
    # the test can see seams: without context the tiles differ
    seams = tiled_forward(net, x, scale, tile=tile, tile_pad=0, unit=unit)
    assert (seams - whole).abs().max().item() > 1e-3


# -- ESRGAN end to end ------------------------------------------------------------------------------------------------
@pytest.fixture
def sr_files(tmp_path):
    net = tiny_net(seed=3)
    weights = tmp_path / "net_g.pth"
    torch.save(basicsr_to_esrgan_layout(net.state_dict(), "xinntao"), weights)  # a published-layout file
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    write_png(src / "rgb.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    write_png(src / "sub" / "gray.png", rng.integers(0, 256, (18, 16), dtype=np.uint8))
    write_png(src / "rgba.png", rng.integers(0, 256, (16, 20, 4), dtype=np.uint8))
    write_png(src / "deep.png", rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16))
    return net, weights, src


def _cfg(tmp_path, *overrides):
    return compose_cfg(tmp_path, ["device=cpu", *overrides], config_name="predict")


def test_esrgan_folder_keeps_names_layout_and_depth(tmp_path, sr_files):
    net, weights, src = sr_files
    out = tmp_path / "out"
    written = predict(_cfg(tmp_path, "model=esrgan", f"weights={weights}", f"input={src}", f"output={out}"))
    assert sorted(written) == sorted(str(out / p) for p in ("rgb.png", "sub/gray.png", "rgba.png", "deep.png"))
    rgb = read_image(out / "rgb.png")
    assert rgb.pixels.shape == (80, 96, 3) and rgb.pixels.dtype == np.uint8
    gray = read_image(out / "sub" / "gray.png")
    assert gray.pixels.shape == (72, 64) and gray.pixels.dtype == np.uint8
    rgba = read_image(out / "rgba.png")
    assert rgba.pixels.shape == (64, 80, 4)
    deep = read_image(out / "deep.png")
    assert deep.pixels.dtype == np.uint16 and deep.pixels.shape == (64, 64, 3)
    assert len(np.unique(deep.pixels)) > 256  # 16 bits kept, not an 8-bit round trip
    # the RGB result is the network's output, RGB order, rounded
    x = torch.from_numpy(read_image(src / "rgb.png").rgb01()).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = (net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(rgb.pixels.astype(np.float64) - ref).max() <= 1
    # alpha upscaled separately (MATLAB bicubic): a constant alpha stays constant
    write_png(tmp_path / "a" / "flat.png", np.dstack([np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 77, np.uint8)]))
    predict(_cfg(tmp_path, f"weights={weights}", f"input={tmp_path / 'a' / 'flat.png'}", f"output={out}"))
    assert (read_image(out / "flat.png").pixels[..., 3] == 77).all()
    predict(
        _cfg(
            tmp_path,
            f"weights={weights}",
            f"input={tmp_path / 'a' / 'flat.png'}",
            f"output={out / 'n'}",
            "alpha_upsampler=network",
        )
    )
    assert read_image(out / "n" / "flat.png").pixels.shape == (32, 32, 4)


@pytest.mark.slow
def test_esrgan_tiles_and_bf16_through_the_config(tmp_path, sr_files):
    _, weights, src = sr_files
    base = [f"weights={weights}", f"input={src / 'rgb.png'}"]
    predict(_cfg(tmp_path, *base, f"output={tmp_path / 'whole'}"))
    predict(_cfg(tmp_path, *base, f"output={tmp_path / 'tiled'}", "tile=8", "tile_pad=auto"))
    whole = read_image(tmp_path / "whole" / "rgb.png").pixels.astype(int)
    tiled = read_image(tmp_path / "tiled" / "rgb.png").pixels.astype(int)
    assert np.abs(whole - tiled).max() <= 1  # within 1/255
    predict(_cfg(tmp_path, *base, f"output={tmp_path / 'bf16'}", "precision=bf16"))  # allowed on CPU too
    bf16 = read_image(tmp_path / "bf16" / "rgb.png").pixels.astype(int)
    assert np.abs(whole - bf16).mean() < 3
    with pytest.raises(ValueError, match="precision must be one of"):
        predict(_cfg(tmp_path, *base, "precision=fp16"))


def test_bicubic_needs_no_weights(tmp_path, sr_files):
    _, _, src = sr_files
    (path,) = predict(_cfg(tmp_path, "model=bicubic", f"input={src / 'rgb.png'}", f"output={tmp_path / 'b'}"))
    assert read_image(path).pixels.shape == (80, 96, 3)


def test_esrgan_errors_are_clear(tmp_path, sr_files):
    _, weights, src = sr_files
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        predict(_cfg(tmp_path, f"weights={weights}", f"input={src / 'nothere.png'}"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"RRDB_trunk.*model\.0\.weight.*conv1\.weight"):
        predict(_cfg(tmp_path, f"weights={tmp_path / 'bad.pth'}", f"input={src}"))
    with pytest.raises(ValueError, match="weights=PATH is required"):
        predict(_cfg(tmp_path, f"input={src}", "default_sr_weights=null"))


# -- SC-FEGAN ---------------------------------------------------------------------------------------------------------
def tiny_face_net(seed=0):
    torch.manual_seed(seed)
    net = SCFEGANGenerator(cnum=4).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.3, 0.3)
    return net


def _face_inputs(tmp_path, h=150, w=170):
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[40:90, 30:120] = 255
    mask[100:103, 10:160] = 255  # a thin stroke
    sketch = np.zeros((h, w), np.uint8)
    sketch[60, 35:110] = 255
    color = np.zeros((h, w, 3), np.uint8)
    color[70:74, 40:100] = (200, 30, 40)
    return (
        write_png(tmp_path / "face.png", face),
        write_png(tmp_path / "mask.png", mask),
        write_png(tmp_path / "sketch.png", sketch),
        write_png(tmp_path / "color.png", color),
        face,
        mask > 0,
    )


def test_scfegan_edit_keeps_unmasked_pixels_bit_for_bit(tmp_path):
    net = tiny_face_net()
    gen_cfg = {
        "_target_": "archs.scfegan_generator.SCFEGANGenerator",
        "in_channels": 9,
        "out_channels": 3,
        "cnum": 4,
        "self_gated_deconv": True,
        "padding_mode": "tf_same",
    }
    weights = save_generator_file(tmp_path / "G.pth", net, gen_cfg, {"input_size": 128})
    face_p, mask_p, sketch_p, color_p, face, mask = _face_inputs(tmp_path)
    (path,) = predict(
        _cfg(
            tmp_path,
            "model=scfegan",
            f"weights={weights}",
            f"input={face_p}",
            f"mask={mask_p}",
            f"sketch={sketch_p}",
            f"color={color_p}",
            f"output={tmp_path / 'out.png'}",
        )
    )
    result = read_image(path).pixels
    assert result.shape == face.shape and result.dtype == np.uint8
    assert np.array_equal(result[~mask], face[~mask])
    assert (result[mask] != face[mask]).mean() > 0.5  # the masked region was regenerated
    # sketch and colour are optional; an explicit size and an output folder work too
    (path2,) = predict(
        _cfg(
            tmp_path,
            "model=scfegan",
            f"weights={weights}",
            f"input={face_p}",
            f"mask={mask_p}",
            "size=[256,128]",
            f"output={tmp_path / 'dir'}",
        )
    )
    assert path2.endswith("dir/face.png")
    assert np.array_equal(read_image(path2).pixels[~mask], face[~mask])


@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16"])
def test_scfegan_awkward_images(kind):
    net = tiny_face_net(seed=1)
    rng = np.random.default_rng(1)
    shape = {"gray": (128, 128), "rgba": (128, 128, 4), "uint16": (128, 128, 3)}[kind]
    dtype = np.uint16 if kind == "uint16" else np.uint8
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    mask = np.zeros((128, 128), bool)
    mask[20:70, 50:90] = True
    result = edit_face(net, Image(pixels, float(np.iinfo(dtype).max), "x"), mask, size=(128, 128))
    assert result.shape == pixels.shape and result.dtype == pixels.dtype
    assert np.array_equal(result[~mask], pixels[~mask])
    if kind == "rgba":
        assert np.array_equal(result[..., 3], pixels[..., 3])


def test_bgr_weights_flip_inputs_and_output():
    net = tiny_face_net(seed=2)
    rng = np.random.default_rng(2)
    face = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    color = np.zeros((128, 128, 3), np.float32)
    color[30:40, 30:90] = (0.9, 0.1, 0.3)
    mask = np.zeros((128, 128), bool)
    mask[20:80, 20:100] = True
    as_bgr = edit_face(net, Image(face, 255.0, "f"), mask, color=color, bgr=True)
    by_hand = edit_face(net, Image(face[..., ::-1].copy(), 255.0, "f"), mask, color=color[..., ::-1].copy(), bgr=False)
    assert np.array_equal(as_bgr, by_hand[..., ::-1])
    assert not np.array_equal(as_bgr, edit_face(net, Image(face, 255.0, "f"), mask, color=color, bgr=False))


def test_scfegan_errors_are_clear(tmp_path):
    net = tiny_face_net()
    weights = save_generator_file(tmp_path / "G.pth", net, None, {"input_size": 128})
    face_p, mask_p, _, _, _, _ = _face_inputs(tmp_path)
    base = ["model=scfegan", f"weights={weights}", f"input={face_p}"]
    write_png(tmp_path / "small_mask.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"mask .*small_mask.png.* is 64x64 but the input image is 170x150"):
        predict(_cfg(tmp_path, *base, f"mask={tmp_path / 'small_mask.png'}"))
    with pytest.raises(FileNotFoundError, match="input image .*missing.png"):
        predict(
            _cfg(tmp_path, "model=scfegan", f"weights={weights}", f"input={tmp_path / 'missing.png'}", f"mask={mask_p}")
        )
    with pytest.raises(FileNotFoundError, match="sketch .*nosketch.png"):
        predict(_cfg(tmp_path, *base, f"mask={mask_p}", f"sketch={tmp_path / 'nosketch.png'}"))
    with pytest.raises(ValueError, match="mask=MASK_IMAGE is required"):
        predict(_cfg(tmp_path, *base))
    with pytest.raises(ValueError, match="multiple of 128"):
        predict(_cfg(tmp_path, *base, f"mask={mask_p}", "size=100"))
    save_generator_weights(tmp_path / "sr.pth", tiny_net())
    with pytest.raises(ValueError, match="not an SC-FEGAN generator.*gconv1_ds.conv.weight.*body.0.rdb1"):
        predict(_cfg(tmp_path, "model=scfegan", f"weights={tmp_path / 'sr.pth'}", f"input={face_p}", f"mask={mask_p}"))
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="cannot read generator weights .*junk.pth"):
        predict(
            _cfg(tmp_path, "model=scfegan", f"weights={tmp_path / 'junk.pth'}", f"input={face_p}", f"mask={mask_p}")
        )


def test_rrdbnet_config_from_saved_weights(tmp_path):
    # weights written by training carry no architecture: it is read off the tensors
    net = tiny_net(scale=2)
    save_generator_weights(tmp_path / "w.pth", net)
    assert rrdbnet_config(net.state_dict())["scale"] == 2
