"""Tiled validation (``model.val_tile``): on the real Set5 images shipped in data/demo, the validation metrics and
sample grids equal untiled validation within 1/255, and the generators only ever see tile-sized inputs."""

import pytest
import torch
from conftest import REPO, TINY_ESRGAN, compose_cfg
from hydra.utils import instantiate
from pytorch_lightning import Trainer

from ops.sr_tiles import receptive_margin

SET5 = REPO / "data" / "demo" / "val" / "Set5"  # 512x512 baby: an input of about 128x128


def _validate(tmp_path, tile: int, pad="auto"):
    cfg = compose_cfg(
        tmp_path / f"t{tile}",
        [*TINY_ESRGAN, f"data.train_dirs=[{SET5}]", f"data.val_dirs=[{SET5}]", f"model.val_tile={tile}"]
        + ([f"model.val_tile_pad={pad}"] if pad != "auto" else []),
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model, _recursive_=False)
    # He-initialised convolutions instead of RRDBNet's 0.1-scaled ones: an output that varies strongly with the
    # input (std ~0.8 on baby.png), so that seams between tiles would show in the 8-bit images.
    for m in model.net_g.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, a=0.2)
            torch.nn.init.zeros_(m.bias)
    model.net_g_ema.load_state_dict(model.net_g.state_dict())
    seen = []
    for net in (model.net_g, model.net_g_ema):
        net.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(model, datamodule=instantiate(cfg.data), verbose=False)
    return model, metrics, seen


@pytest.mark.slow
def test_tiled_validation_equals_untiled_and_sees_only_tiles(tmp_path):
    whole, m_whole, seen_whole = _validate(tmp_path, 0)
    tiled, m_tiled, seen_tiled = _validate(tmp_path, 32)
    margin = receptive_margin(tiled.net_g_ema)
    assert margin == 19  # 1 RRDB: 15 * 1 + 4
    assert max(max(s) for s in seen_whole) > 32 + 2 * margin  # baby.png's input, whole (about 128 px)
    assert max(max(s) for s in seen_tiled) <= 32 + 2 * margin  # only tiles (with their context) reach G
    assert len(seen_tiled) > 2 * len(seen_whole)
    for key in ("val/psnr_y", "val/ssim_y", "val/psnr_rgb"):
        assert m_tiled[key] == pytest.approx(m_whole[key], abs=1e-4), key
    # The sample grids (uint8: bicubic, SR by the EMA G, SR by the raw G, HR) of all five images: within 1/255.
    (rows_whole,), (rows_tiled,) = whole.val_sample_rows.values(), tiled.val_sample_rows.values()  # one folder
    assert len(rows_whole) == len(rows_tiled) == 5
    for rw, rt in zip(rows_whole, rows_tiled):
        for a, b in zip(rw, rt):
            assert a.shape == b.shape
            assert (a.int() - b.int()).abs().max() <= 1


@pytest.mark.slow
def test_a_pad_below_the_receptive_margin_is_not_exact(tmp_path):
    """The check above can fail: with too little context per tile the seams show (so equality is not vacuous)."""
    whole, _, _ = _validate(tmp_path, 0)
    seamed, _, _ = _validate(tmp_path, 32, pad=0)
    diffs = [
        int((a.int() - b.int()).abs().max())
        for rw, rt in zip(*(next(iter(m.val_sample_rows.values())) for m in (whole, seamed)))
        for a, b in zip(rw, rt)
    ]
    assert max(diffs) > 1


def test_val_tile_values_are_checked():
    from test_accumulation import SR_MODEL

    from lightning_modules.esrgan_module import ESRGANModule

    with pytest.raises(ValueError, match="model.val_tile must be 0"):
        ESRGANModule(**SR_MODEL, val_tile=4)
    with pytest.raises(ValueError, match="model.val_tile_pad must be"):
        ESRGANModule(**SR_MODEL, val_tile=32, val_tile_pad=-1)
    assert ESRGANModule(**SR_MODEL, val_tile=32, val_tile_pad=10).val_tile_pad == 10
