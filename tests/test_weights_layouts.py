"""Generator files: the three published ESRGAN key layouts, this project's containers and exports, the official
SC-FEGAN TF variable mapping (with and without TensorFlow), and clear errors for files that are none of these."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from archs.rrdbnet import RRDBNet
from archs.scfegan_generator import SCFEGANGenerator
from scripts.scfegan_convert import main as convert_main
from weights.io import build_generator, load_generator_state, save_generator_file, save_generator_weights
from weights.layouts import ESRGAN_LAYOUTS, basicsr_to_esrgan_layout, esrgan_layout, esrgan_to_basicsr, rrdbnet_config
from weights.scfegan_convert import (
    DECONV_LAYERS,
    GATED_LAYERS,
    convert,
    official_tf_generator,
    tf_to_torch,
    torch_to_tf,
)

TINY = dict(num_feat=8, num_block=2, num_grow_ch=4)


def tiny_rrdbnet(seed=0, **kw):
    torch.manual_seed(seed)
    net = RRDBNet(**{**TINY, **kw}).eval()
    with torch.no_grad():  # RRDB convs start at x0.1 scale: make every weight matter for the comparisons
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def out(net, x):
    with torch.no_grad():
        return net(x)


# -- ESRGAN layouts ---------------------------------------------------------------------------------------------------
def test_layout_key_names_match_the_published_files():
    with torch.device("meta"):
        sd = RRDBNet().state_dict()  # the full 23-block ESRGAN, no memory
    seq = basicsr_to_esrgan_layout(sd, "sequential")
    for key in (
        "model.0.weight",
        "model.1.sub.0.RDB1.conv1.0.weight",
        "model.1.sub.22.RDB3.conv5.0.bias",
        "model.1.sub.23.weight",
        "model.3.weight",
        "model.6.bias",
        "model.8.weight",
        "model.10.weight",
    ):
        assert key in seq, key
    xin = basicsr_to_esrgan_layout(sd, "xinntao")
    for key in (
        "conv_first.weight",
        "RRDB_trunk.0.RDB1.conv1.weight",
        "RRDB_trunk.22.RDB3.conv5.bias",
        "trunk_conv.weight",
        "upconv1.weight",
        "upconv2.bias",
        "HRconv.weight",
        "conv_last.bias",
    ):
        assert key in xin, key
    assert "body.22.rdb3.conv5.weight" in sd and "conv_body.weight" in sd and "conv_hr.weight" in sd
    assert len(seq) == len(xin) == len(sd) == 2 * (1 + 23 * 15 + 5)
    assert rrdbnet_config(esrgan_to_basicsr(seq)) == {
        "_target_": "archs.rrdbnet.RRDBNet",
        "num_in_ch": 3,
        "num_out_ch": 3,
        "scale": 4,
        "num_feat": 64,
        "num_block": 23,
        "num_grow_ch": 32,
    }


@pytest.mark.parametrize("layout", ESRGAN_LAYOUTS)
def test_each_layout_converts_back_exactly(layout):
    sd = tiny_rrdbnet().state_dict()
    other = basicsr_to_esrgan_layout(sd, layout)
    assert esrgan_layout(other) == layout
    back = esrgan_to_basicsr(other)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


@pytest.mark.parametrize(
    "layout,container,prefix",
    [
        ("sequential", "bare", ""),
        ("sequential", "bare", "module."),
        ("xinntao", "bare", ""),
        ("xinntao", "bare", "module."),
        ("basicsr", "params", ""),
        ("basicsr", "params_ema", "module."),
        ("basicsr", "bare", ""),
    ],
)
def test_published_layout_files_load_and_match(tmp_path, layout, container, prefix):
    net = tiny_rrdbnet(seed=1)
    sd = OrderedDict((prefix + k, v) for k, v in basicsr_to_esrgan_layout(net.state_dict(), layout).items())
    obj = sd if container == "bare" else {container: sd}
    if container == "params_ema":  # BasicSR files hold both; params_ema wins
        obj["params"] = OrderedDict((k, torch.zeros_like(v)) for k, v in sd.items())
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    built, info = build_generator(path)
    assert info.meta["layout"] == layout
    assert info.generator["num_block"] == 2 and info.generator["num_feat"] == 8 and info.generator["num_grow_ch"] == 4
    x = torch.rand(1, 3, 12, 10)
    assert torch.equal(out(built, x), out(net, x))


@pytest.mark.parametrize("scale", [2, 1])
def test_scale_is_inferred_from_conv_first(tmp_path, scale):
    net = tiny_rrdbnet(seed=2, scale=scale)
    torch.save(basicsr_to_esrgan_layout(net.state_dict(), "xinntao"), tmp_path / "x.pth")
    built, info = build_generator(tmp_path / "x.pth")
    assert built.scale == scale and info.generator["num_in_ch"] == 3
    x = torch.rand(1, 3, 8, 12)
    assert torch.equal(out(built, x), out(net, x))


def test_project_checkpoint_uses_hparams_and_ema(tmp_path):
    net, ema = tiny_rrdbnet(seed=3), tiny_rrdbnet(seed=4)
    gen_cfg = {"_target_": "archs.rrdbnet.RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "scale": 4, **TINY}
    sd = {
        **{f"net_g.{k}": v for k, v in net.state_dict().items()},
        **{f"net_g_ema.{k}": v for k, v in ema.state_dict().items()},
        "net_d.conv0_0.weight": torch.zeros(1),
    }
    torch.save({"state_dict": sd, "hyper_parameters": {"generator": gen_cfg}, "global_step": 3}, tmp_path / "last.ckpt")
    x = torch.rand(1, 3, 9, 9)
    built, info = build_generator(tmp_path / "last.ckpt")
    assert info.container == "ckpt" and info.generator == gen_cfg
    assert torch.equal(out(built, x), out(ema, x))
    built, _ = build_generator(tmp_path / "last.ckpt", prefer="params")
    assert torch.equal(out(built, x), out(net, x))


def test_project_weights_and_safetensors_round_trip(tmp_path):
    net = tiny_rrdbnet(seed=5)
    x = torch.rand(1, 3, 10, 10)
    save_generator_weights(tmp_path / "w.pth", net)  # the training code's writer
    built, info = build_generator(tmp_path / "w.pth")
    assert info.container == "params_ema" and torch.equal(out(built, x), out(net, x))
    cfg = rrdbnet_config(net.state_dict())
    for name in ("g.safetensors", "g.pth"):
        save_generator_file(tmp_path / name, net, cfg, {"note": "x"})
        built, info = build_generator(tmp_path / name)
        assert info.generator == cfg and info.meta["note"] == "x"
        assert torch.equal(out(built, x), out(net, x))
    # the old reader keeps working and now also takes safetensors
    st = load_generator_state(tmp_path / "g.safetensors")
    assert all(torch.equal(st[k], v) for k, v in net.state_dict().items())


def test_malformed_files_get_clear_errors(tmp_path):
    torch.save({"foo.weight": torch.zeros(2), "bar": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError) as err:
        build_generator(tmp_path / "other.pth", kind="esrgan")
    msg = str(err.value)
    for expected in (
        "conv_first.weight",
        "RRDB_trunk.0.RDB1.conv1.weight",
        "model.0.weight",
        "body.0.rdb1.conv1",
        "foo.weight",
        "bar",
    ):
        assert expected in msg
    with pytest.raises(ValueError, match="gconv1_ds.conv.weight.*foo.weight"):
        build_generator(tmp_path / "other.pth")  # kind auto: names both generators' keys
    (tmp_path / "junk.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="cannot read generator weights"):
        build_generator(tmp_path / "junk.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        build_generator(tmp_path / "tensor.pth")
    torch.save({"epoch": 3, "note": "hi"}, tmp_path / "notensors.pth")
    with pytest.raises(ValueError, match="holds no tensors.*epoch"):
        build_generator(tmp_path / "notensors.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_generator(tmp_path / "nope.pth")
    # a recognised layout with a stray key, and weights of the wrong size, are named too
    sd = basicsr_to_esrgan_layout(tiny_rrdbnet().state_dict(), "xinntao")
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "stray.pth")
    with pytest.raises(ValueError, match="extra.weight"):
        build_generator(tmp_path / "stray.pth")


def test_files_cannot_name_arbitrary_classes(tmp_path):
    net = tiny_rrdbnet()
    save_generator_file(tmp_path / "evil.pth", net, {"_target_": "os.system", "command": "true"})
    with pytest.raises(ValueError, match="os.system"):
        build_generator(tmp_path / "evil.pth")


# -- SC-FEGAN --------------------------------------------------------------------------------------------------------
def tiny_scfegan(seed=0, **kw):
    torch.manual_seed(seed)
    net = SCFEGANGenerator(cnum=4, **kw).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.1, 0.1)
    return net


def test_scfegan_files_are_recognised(tmp_path):
    net = tiny_scfegan(self_gated_deconv=False, padding_mode="symmetric")
    torch.save(net.state_dict(), tmp_path / "g.pth")
    built, info = build_generator(tmp_path / "g.pth", defaults={"padding_mode": "symmetric"})
    assert isinstance(built, SCFEGANGenerator)
    assert info.generator["cnum"] == 4 and info.generator["self_gated_deconv"] is False
    x = torch.randn(1, 9, 128, 128)
    assert torch.equal(out(built, x), out(net, x))
    with pytest.raises(ValueError, match="not an ESRGAN generator"):
        build_generator(tmp_path / "g.pth", kind="esrgan")
    torch.save(tiny_rrdbnet().state_dict(), tmp_path / "r.pth")
    with pytest.raises(ValueError, match="not an SC-FEGAN generator.*gconv1_ds"):
        build_generator(tmp_path / "r.pth", kind="scfegan")


def test_tf_variable_mapping_round_trip_without_tensorflow(tmp_path):
    net = tiny_scfegan(seed=1)
    tf_vars = torch_to_tf(net.state_dict())
    # official names and TF layouts
    k = tf_vars["generator/gconv1_ds/kernel"]
    assert k.shape == (7, 7, 9, 4)  # [kh, kw, in, out]
    assert tf_vars["generator/gconv2_ds_g/kernel"].shape == (5, 5, 4, 8)
    assert tf_vars["generator/deconv7/w"].shape == (5, 5, 3, 4)  # [kh, kw, out, in]
    assert "generator/deconv7/biases2" in tf_vars
    assert len(tf_vars) == 4 * len(GATED_LAYERS) + 3 * len(DECONV_LAYERS)
    # the permutation itself: TF kernel[dy, dx, i, o] is torch weight[o, i, dy, dx]
    w = net.gconv1_ds.conv.weight
    assert k[2, 5, 7, 1] == w[1, 7, 2, 5].item()
    assert tf_vars["generator/deconv3/w"][1, 4, 5, 6] == net.deconv3.deconv.weight[6, 5, 1, 4].item()
    tf_vars["Adam/generator/gconv1_ds/kernel/m"] = np.zeros(1, np.float32)  # optimiser slots are ignored
    state, config, ignored = tf_to_torch(tf_vars)
    assert config == {
        "_target_": "archs.scfegan_generator.SCFEGANGenerator",
        "in_channels": 9,
        "out_channels": 3,
        "cnum": 4,
        "self_gated_deconv": True,
        "padding_mode": "tf_same",
    }
    assert len(ignored) == len(DECONV_LAYERS) + 1
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    # through an .npz and the command line, into a file predict.py reads, marked BGR
    np.savez(tmp_path / "vars.npz", **tf_vars)
    convert_main(["--tf-ckpt", str(tmp_path / "vars.npz"), "--out", str(tmp_path / "G.pth")])
    built, info = build_generator(tmp_path / "G.pth")
    assert info.meta["bgr"] is True and info.meta["input_size"] == 512
    x = torch.randn(1, 9, 128, 128)
    assert torch.equal(out(built, x), out(net, x))
    del tf_vars["generator/gconv8_g/bias"]
    with pytest.raises(ValueError, match="gconv8_g/bias"):
        tf_to_torch(tf_vars)


def test_tensorflow_missing_or_checkpoint_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="SC-FEGAN.ckpt.index"):
        convert(str(tmp_path / "SC-FEGAN.ckpt"))


def test_official_tf_checkpoint_converts_exactly(tmp_path):
    tf = pytest.importorskip(
        "tensorflow",
        reason="TensorFlow is an optional extra (not in requirements.txt): the mapping is tested without it above; "
        "`pip install tensorflow-cpu` to run this end-to-end check against a real TF checkpoint",
    )
    net = tiny_scfegan(seed=2)
    rng = np.random.default_rng(0)
    tf_vars = torch_to_tf(net.state_dict())
    for layer in DECONV_LAYERS:  # the dead biases2 must not matter
        tf_vars[f"generator/{layer}/biases2"] = rng.normal(size=tf_vars[f"generator/{layer}/biases2"].shape).astype(
            np.float32
        )
    prefix = str(tmp_path / "SC-FEGAN.ckpt")
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(arr, name=name.replace("/", "_")) for name, arr in tf_vars.items()}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)
    convert_main(["--tf-ckpt", prefix, "--out", str(tmp_path / "G.safetensors")])
    built, info = build_generator(tmp_path / "G.safetensors")
    assert info.meta["bgr"] is True
    x = rng.uniform(-1, 1, size=(1, 256, 128, 9)).astype(np.float32)  # non-square: pads per axis
    ref = official_tf_generator(tf, {k: tf.constant(v) for k, v in tf_vars.items()}, tf.constant(x)).numpy()
    got = out(built, torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["sequential", "xinntao"])
def test_load_generator_state_renames_published_layouts_for_interpolation(tmp_path, layout):
    """evaluate.py's interpolation and weights.interpolate read released files through load_generator_state."""
    from archs.rrdbnet import RRDBNet
    from weights.interpolate import interpolate_state_dicts
    from weights.io import load_generator_state
    from weights.layouts import basicsr_to_esrgan_layout

    torch.manual_seed(0)
    a, b = (
        RRDBNet(num_feat=8, num_block=2, num_grow_ch=4).state_dict(),
        RRDBNet(num_feat=8, num_block=2, num_grow_ch=4).state_dict(),
    )
    torch.save({f"module.{k}": v for k, v in basicsr_to_esrgan_layout(a, layout).items()}, tmp_path / "a.pth")
    torch.save({"params_ema": b}, tmp_path / "b.pth")
    la = load_generator_state(tmp_path / "a.pth")
    assert set(la) == set(a) and all(torch.equal(la[k], a[k]) for k in a)
    mid = interpolate_state_dicts(la, load_generator_state(tmp_path / "b.pth"), 0.5)
    assert all(torch.allclose(mid[k], (a[k] + b[k]) / 2) for k in a if a[k].is_floating_point())
