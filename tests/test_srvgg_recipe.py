"""The compact generator in the ESRGAN / Real-ESRGAN recipes (conf/model/generator/srvgg_compact.yaml), and
fine-tuning from a named Real-ESRGAN model (conf/experiment/realesrgan_finetune.yaml)."""

from pathlib import Path

import pytest
import torch
from conftest import TINY_ESRGAN, compose_cfg
from hydra.utils import instantiate
from test_esrgan_module import _one_image_dir
from test_ncnn import _package_file

from archs.srvgg import SRVGGNetCompact
from runtime.config_checks import check_train_config
from runtime.training import train
from weights.io import build_generator
from weights.named import named_weights

#: TINY_ESRGAN with the compact network in place of the narrow RRDBNet.
TINY_COMPACT = [o for o in TINY_ESRGAN if not o.startswith("model.generator.")] + [
    "model/generator=srvgg_compact",
    "model.generator.num_feat=8",
    "model.generator.num_conv=2",
]


@pytest.mark.parametrize("recipe", ["demo", "realesrgan"])
def test_compact_generator_in_both_recipes(tmp_path, recipe):
    over = [o for o in TINY_COMPACT if o != "experiment=demo"] + [f"experiment={recipe}"]
    cfg = compose_cfg(tmp_path, over)
    model = instantiate(cfg.model, _recursive_=False)
    assert isinstance(model.net_g, SRVGGNetCompact) and model.scale == cfg.data.scale == 4
    assert (model.net_g.num_feat, model.net_g.num_conv, model.net_g.act_type) == (8, 2, "prelu")
    assert type(model.net_d).__name__ == {"demo": "VGGStyleDiscriminator", "realesrgan": "UNetDiscriminatorSN"}[recipe]


def test_dot_instead_of_slash_is_a_clear_error(tmp_path):
    cfg = compose_cfg(tmp_path, ["experiment=demo", "model.generator=srvgg_compact"])
    with pytest.raises(ValueError, match="write model/generator=srvgg_compact"):
        check_train_config(cfg)


@pytest.mark.slow
def test_compact_trains_both_stages_and_its_weights_load(tmp_path):
    data = _one_image_dir(tmp_path)
    cfg = compose_cfg(
        tmp_path / "run",
        [
            *TINY_COMPACT,
            f"data.train_dirs=[{data}]",
            f"data.val_dirs=[{data}]",
            "model.psnr.iters=3",
            "model.gan.iters=2",
            "trainer.val_check_interval=5",
        ],
    )
    result = train(cfg)
    net, info = build_generator(Path(result["output_dir"]) / "weights" / "net_g_gan.pth")
    assert isinstance(net, SRVGGNetCompact) and net.num_conv == 2 and info.meta.get("layout") == "compact"


def test_finetune_experiment_starts_from_the_named_model(tmp_path):
    cfg = compose_cfg(tmp_path, ["experiment=realesrgan_finetune"])
    assert cfg.model.init_weights == "realesrgan-x4plus" and list(cfg.model.stages) == ["gan"]
    assert cfg.model.generator.num_block == 23  # x4plus's RRDBNet, so that its weights load
    # The compact variant, built for real: G and its EMA hold the converted official weights.
    _package_file("realesr-animevideov3-x4.param")  # skips with the reason when the package cannot be had
    cfg = compose_cfg(
        tmp_path,
        [
            "experiment=realesrgan_finetune",
            "model/generator=srvgg_compact",
            "model.init_weights=realesr-animevideov3-x4",
            "model.perceptual.weights=random",
            "model.discriminator.num_feat=4",
        ],
    )
    model = instantiate(cfg.model, _recursive_=False)
    official, _ = build_generator(named_weights("realesr-animevideov3-x4"))
    for net in (model.net_g, model.net_g_ema):
        ours = net.state_dict()
        assert all(torch.equal(ours[k], v) for k, v in official.state_dict().items())
