"""The named Real-ESRGAN models wired into predict and the app (weights/named.py via inference.run.load_model),
their outscale resize, and the tiling rules of the compact network (inference/tiling.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg
from PIL import Image
from test_ncnn import REF_DIR, _package_file

from archs.srvgg import SRVGGNetCompact
from inference.images import read_image
from inference.run import predict
from inference.tiling import forward_bytes, plan_tile, receptive_margin, tiled_forward
from weights.io import build_generator
from weights.named import named_weights


def _small_png(tmp_path, size=24):
    """A real picture without the shared data: the stored ncnn reference (Set14 comic's face), downscaled."""
    path = tmp_path / "in" / "comic.png"
    path.parent.mkdir()
    with Image.open(REF_DIR / "realesrgan-x4plus.png") as im:
        im.convert("RGB").resize((size, size), Image.BICUBIC).save(path)
    return path


def _net_output(weights_name, src):
    net, _ = build_generator(named_weights(weights_name))
    x = torch.from_numpy(np.asarray(Image.open(src), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        return net(x)


@pytest.mark.slow  # the 23-block network (and its conversion on first use)
def test_predict_without_weights_runs_realesrgan_x4plus(tmp_path):
    _package_file("realesrgan-x4plus.param")  # skips with the reason when the package cannot be had
    src = _small_png(tmp_path)
    (out,) = predict(compose_cfg(tmp_path, ["device=cpu", f"input={src}", f"output={tmp_path / 'o'}"], "predict"))
    got = read_image(out).pixels
    want = (_net_output("realesrgan-x4plus", src)[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
    assert got.shape == (96, 96, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_animevideov3_x2_is_resized_to_x2(tmp_path):
    _package_file("realesr-animevideov3-x2.param")
    src = _small_png(tmp_path)
    cfg = compose_cfg(
        tmp_path,
        ["device=cpu", "weights=realesr-animevideov3-x2", f"input={src}", f"output={tmp_path / 'o'}"],
        "predict",
    )
    (out,) = predict(cfg)
    got = read_image(out).pixels
    assert got.shape == (48, 48, 3)  # the x4 network's result, bicubic-resized as the ncnn file's Interp layer does
    y = F.interpolate(_net_output("realesr-animevideov3-x2", src), size=(48, 48), mode="bicubic", align_corners=False)
    want = (y[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_compact_receptive_margin_is_exact():
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=4, num_conv=3, upscale=2, act_type="prelu").eval()
    margin = receptive_margin(net)
    assert margin == 3 + 2  # num_conv + 2 convs of 3x3, all at the input resolution
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        base = net(x)
        for d, changes in ((margin, True), (margin + 1, False)):
            x2 = x.clone()
            x2[..., 10, 10 + d] += 1.0
            changed = (net(x2) - base)[..., 20:22, 20:22].abs().max() > 0  # output pixels of input (10, 10)
            assert bool(changed) == changes, d
        tiled = tiled_forward(net, x, 2, tile=6, tile_pad=margin)
        short = tiled_forward(net, x, 2, tile=6, tile_pad=margin - 1)
    assert (tiled - base).abs().max() < 1e-5 and (short - base).abs().max() > 1e-4


def test_compact_memory_plan_tiles_a_large_image():
    net = SRVGGNetCompact(num_feat=64, num_conv=16, upscale=4)
    # hand-computed: 3 P F values (conv in/out + PReLU out), P = 100 * 100 pixels, plus 3 h w for the input
    assert forward_bytes(net, 100, 100) == 4 * (3 * 10_000 * 64 + 3 * 10_000)
    cpu = torch.device("cpu")
    assert plan_tile(net, 64, 64, "auto", 18, cpu, max_memory=1) == 0  # fits: whole image
    # 1024 x 1024: the x4 result ~0.75 GB, the untiled forward ~0.75 GB more: over a 1 GB budget, so tiles
    side = plan_tile(net, 1024, 1024, "auto", 18, cpu, max_memory=1)
    assert 0 < side < 1024
    with pytest.raises(MemoryError, match="tile=auto"):
        plan_tile(net, 1024, 1024, 0, 18, cpu, max_memory=1)
