"""Files from strangers and hostile inputs (issue 12, items 1, 2, 4, 9, 10): every case refused with an error naming
the file / key / value, and nothing written or destroyed.

Weights files here are RANDOM networks written by the tests (pretrained weights cannot be downloaded); the
"payload" pickles are harmless: they would create a marker file, and each test asserts that it does not exist.
"""

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ESRGAN, compose_cfg, write_png

from archs.registry import ARCHITECTURES, UnsafeArchitectureError, make_network
from archs.rrdbnet import RRDBNet
from weights.io import build_generator, save_generator_file

TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}


class Payload:
    """Unpickling this creates ``marker`` (what a hostile file would do with os.system or a .pth hook)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_rrdb(scale=4, seed=0):
    torch.manual_seed(seed)
    return RRDBNet(scale=scale, **TINY).eval()


def fake_ckpt(path, generator: dict, net=None, task="sr"):
    """A Lightning-like checkpoint of this project: EMA generator weights and hyper_parameters.generator."""
    net = net if net is not None else tiny_rrdb()
    sd = {f"net_g_ema.{k}": v for k, v in net.state_dict().items()}
    sd.update({f"net_g.{k}": v for k, v in net.state_dict().items()})
    torch.save({"state_dict": sd, "hyper_parameters": {"generator": generator, "task": task}, "iteration": 1}, path)
    return path


def sr_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_png(tmp_path / "val" / f"v{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return tmp_path / "val"


def eval_cfg(tmp_path, *overrides):
    return compose_cfg(tmp_path, ["device=cpu", "model=esrgan", *overrides], config_name="eval")


# =====================================================================================================================
# Item 1: a checkpoint / export chooses what is built only among the project's architectures
# =====================================================================================================================
HOSTILE_TARGETS = [
    lambda m: {"_target_": "numpy.savetxt", "fname": str(m), "X": [[1.0, 2.0]]},
    lambda m: {"_target_": "torch.load", "f": str(m), "weights_only": False},
    lambda m: {"_target_": "builtins.open", "file": str(m), "mode": "w"},
    lambda m: {"_target_": "archs.rrdbnet.RRDBNet", "_args_": [str(m)]},  # Hydra special keys
    lambda m: {
        "_target_": "archs.rrdbnet.RRDBNet",
        "num_feat": {"_target_": "numpy.savetxt", "fname": str(m), "X": [[1.0]]},
    },  # nested target
]


@pytest.mark.parametrize("make", HOSTILE_TARGETS, ids=["savetxt", "torch.load", "open", "_args_", "nested"])
def test_evaluate_refuses_a_checkpoint_naming_code_and_writes_nothing(tmp_path, make):
    marker = tmp_path / "site-packages" / "evil.pth"
    marker.parent.mkdir()
    ckpt = fake_ckpt(tmp_path / "evil.ckpt", make(marker))
    metrics = tmp_path / "m.json"
    cfg = eval_cfg(
        tmp_path,
        f"ckpt_path={ckpt}",
        f"data.test_dirs=[{sr_folder(tmp_path)}]",
        f"metrics_file={metrics}",
        *[f"model.generator.{k}={v}" for k, v in TINY.items()],
    )
    from evaluation.run import evaluate

    with pytest.raises(UnsafeArchitectureError, match="evil.ckpt") as err:
        evaluate(cfg)
    target = make(marker)["_target_"]
    assert target in str(err.value) or "_args_" in str(err.value) or "num_feat" in str(err.value)
    assert not marker.exists() and not metrics.exists()


def test_interpolation_refuses_either_hostile_file(tmp_path):
    marker = tmp_path / "evil.txt"
    good = tmp_path / "good.pth"
    save_generator_file(good, tiny_rrdb(), {"_target_": "archs.rrdbnet.RRDBNet", "scale": 4, **TINY})
    evil = fake_ckpt(tmp_path / "gan.ckpt", {"_target_": "numpy.savetxt", "fname": str(marker), "X": [[1.0]]})
    from evaluation.run import evaluate

    for psnr, gan in ((good, evil), (evil, good)):
        cfg = eval_cfg(
            tmp_path,
            f"interp.psnr_weights={psnr}",
            f"interp.gan_weights={gan}",
            "interp.alphas=[0.5]",
            f"data.test_dirs=[{sr_folder(tmp_path)}]",
        )
        with pytest.raises(UnsafeArchitectureError, match=r"gan\.ckpt.*numpy\.savetxt"):
            evaluate(cfg)
    assert not marker.exists()


def test_predict_and_export_refuse_hostile_weights(tmp_path):
    from weights.export import export_file

    marker = tmp_path / "evil.txt"
    net = tiny_rrdb()
    hostile = {"_target_": "numpy.savetxt", "fname": str(marker), "X": [[1.0]]}
    for name in ("evil.pth", "evil.safetensors"):
        path = save_generator_file(tmp_path / name, net, hostile)
        with pytest.raises(UnsafeArchitectureError, match=rf"{name}.*numpy\.savetxt"):
            build_generator(path)
        with pytest.raises(UnsafeArchitectureError, match=name):
            export_file(path, "safetensors", tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_make_network_allow_list_and_argument_checks():
    assert set(ARCHITECTURES) >= {"archs.rrdbnet.RRDBNet", "archs.scfegan_generator.SCFEGANGenerator"}
    net = make_network({"_target_": "archs.rrdbnet.RRDBNet", **TINY}, role="generator")
    assert isinstance(net, RRDBNet)
    with pytest.raises(UnsafeArchitectureError, match=r"model\.generator.*os\.system"):
        make_network({"_target_": "os.system", "command": "true"}, "model.generator")
    with pytest.raises(UnsafeArchitectureError, match="takes no argument.*evil"):
        make_network({"_target_": "archs.rrdbnet.RRDBNet", "evil": 1})
    with pytest.raises(UnsafeArchitectureError, match="a discriminator, where a generator"):
        make_network({"_target_": "archs.vgg_discriminator.VGGStyleDiscriminator"}, role="generator")
    with pytest.raises(UnsafeArchitectureError, match=r"\['_partial_'\]"):
        make_network({"_target_": "archs.rrdbnet.RRDBNet", "_partial_": True})
    with pytest.raises(ValueError, match="scale=3"):
        make_network({"_target_": "archs.rrdbnet.RRDBNet", "scale": 3})


def test_train_builds_its_networks_through_the_allow_list(tmp_path):
    from runtime.training import train

    cfg = compose_cfg(tmp_path, [*TINY_ESRGAN, "model.generator._target_=numpy.savetxt"])
    with pytest.raises(Exception, match=r"model\.generator.*numpy\.savetxt"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


# =====================================================================================================================
# Item 2: the FID Inception weights are read with weights_only=True
# =====================================================================================================================
def _random_inception_state():
    # RANDOM weights with the keys and shapes of torch-fidelity's FID Inception (the real file cannot be downloaded).
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with (
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None),
        mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}),
    ):
        torch.manual_seed(0)
        return fe.FeatureExtractorInceptionV3("inception-v3-compat", ["64"]).state_dict()


def test_fid_inception_loaded_safely_gives_torch_fidelitys_features(tmp_path):
    from torchmetrics.image.fid import NoTrainInceptionV3

    from metrics.fid import build_fid, build_inception

    path = tmp_path / "inception.pth"
    torch.save(_random_inception_state(), path)
    ours = build_inception(path, 64)
    reference = NoTrainInceptionV3("inception-v3-compat", ["64"], str(path))  # torch-fidelity's loader (trusted file)
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(ours(imgs), reference(imgs))
    fid = build_fid(path, 64)
    fid.update(imgs, real=True)
    fid.update(imgs.flip(-1), real=False)
    assert torch.isfinite(fid.compute())


@pytest.mark.parametrize("content", ["payload", "truncated", "empty", "not_a_state_dict"])
def test_fid_inception_file_with_a_payload_or_damage_is_refused(tmp_path, content):
    from metrics.fid import build_inception

    marker = tmp_path / "ran.txt"
    path = tmp_path / "inception.pth"
    if content == "payload":
        torch.save({"Conv2d_1a_3x3.conv.weight": Payload(marker)}, path)
    elif content == "truncated":
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "empty":
        path.write_bytes(b"")
    else:
        torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="inception.pth"):
        build_inception(path, 64)
    assert not marker.exists()


def test_fid_hub_cache_file_goes_through_the_same_safe_loader(tmp_path, monkeypatch):
    from evaluation.scoring import build_fid_metric
    from metrics.fid import INCEPTION_FILE

    marker = tmp_path / "ran.txt"
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    with open(tmp_path / "hub" / "checkpoints" / INCEPTION_FILE, "wb") as f:
        pickle.dump(Payload(marker), f)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = eval_cfg(tmp_path, "model=scfegan", "metrics.fid.feature=64")
    with pytest.raises(ValueError, match=INCEPTION_FILE):
        build_fid_metric(cfg, torch.device("cpu"), [])
    assert not marker.exists()


# =====================================================================================================================
# Item 4: predict.py never destroys an input, never re-reads its outputs, never overwrites silently
# =====================================================================================================================
@pytest.fixture
def sr_setup(tmp_path):
    weights = save_generator_file(
        tmp_path / "g.pth", tiny_rrdb(), {"_target_": "archs.rrdbnet.RRDBNet", "scale": 4, **TINY}
    )
    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    write_png(src / "a.png", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    write_png(src / "sub" / "b.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return weights, src


def _pcfg(tmp_path, *overrides):
    return compose_cfg(tmp_path, ["device=cpu", *overrides], config_name="predict")


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_equal_to_input_folder_is_refused(tmp_path, sr_setup, overwrite):
    from inference.run import predict

    weights, src = sr_setup
    before = _snapshot(src)
    with pytest.raises(ValueError, match="is the input folder"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={src}", f"output={src}", f"overwrite={overwrite}"))
    link = tmp_path / "link"
    link.symlink_to(src, target_is_directory=True)
    with pytest.raises(ValueError, match="is the input folder"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={src}", f"output={link}", f"overwrite={overwrite}"))
    assert _snapshot(src) == before


def test_output_inside_input_folder_is_refused(tmp_path, sr_setup):
    from inference.run import predict

    weights, src = sr_setup
    before = _snapshot(src)
    with pytest.raises(ValueError, match="inside the input folder"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={src}", f"output={src / 'x4'}"))
    assert _snapshot(src) == before and not (src / "x4").exists()


def test_single_input_whose_output_is_itself_is_refused(tmp_path, sr_setup):
    from inference.run import predict

    weights, src = sr_setup
    before = _snapshot(src)
    with pytest.raises(ValueError, match=r"a\.png.*is one of the input images"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={src / 'a.png'}", f"output={src}", "overwrite=true"))
    assert _snapshot(src) == before


def test_existing_outputs_need_overwrite_true(tmp_path, sr_setup):
    from inference.run import predict

    weights, src = sr_setup
    out = tmp_path / "out"
    write_png(out / "a.png", np.zeros((4, 4, 3), np.uint8))
    old = (out / "a.png").read_bytes()
    with pytest.raises(FileExistsError, match=r"1 output file.*a\.png.*overwrite=true"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={src}", f"output={out}"))
    assert (out / "a.png").read_bytes() == old and not (out / "sub").exists()  # nothing written, not even b.png
    written = predict(_pcfg(tmp_path, f"weights={weights}", f"input={src}", f"output={out}", "overwrite=true"))
    assert len(written) == 2 and (out / "a.png").read_bytes() != old
    assert not [p for p in out.rglob("*.tmp")]  # atomic writes leave no temporary behind
    with pytest.raises(ValueError, match="is an existing file"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={src}", f"output={out / 'a.png'}", "overwrite=true"))


def test_face_output_onto_an_input_or_an_existing_file(tmp_path):
    from archs.scfegan_generator import SCFEGANGenerator
    from inference.run import predict

    torch.manual_seed(0)
    weights = save_generator_file(tmp_path / "g.pth", SCFEGANGenerator(cnum=4))
    rng = np.random.default_rng(0)
    face = write_png(tmp_path / "face.png", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    mask = write_png(tmp_path / "mask.png", np.full((128, 128), 255, np.uint8))
    before = _snapshot(tmp_path)
    base = ["model=scfegan", f"weights={weights}", f"input={face}", f"mask={mask}", "size=128"]
    for target in (face, mask):
        with pytest.raises(ValueError, match="is one of the input images"):
            predict(_pcfg(tmp_path, *base, f"output={target}", "overwrite=true"))
    assert _snapshot(tmp_path) == before
    out = tmp_path / "o" / "edit.png"
    predict(_pcfg(tmp_path, *base, f"output={out}"))
    with pytest.raises(FileExistsError, match="edit.png"):
        predict(_pcfg(tmp_path, *base, f"output={out}"))
    predict(_pcfg(tmp_path, *base, f"output={out}", "overwrite=true"))


# =====================================================================================================================
# Item 9: pixel limit from the header, memory estimate and tiling, O(n) name-clash check
# =====================================================================================================================
def png_header_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (a decompression-bomb header; its pixels are not there)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path, sr_setup, monkeypatch):
    import inference.images as images
    from inference.run import predict

    weights, _ = sr_setup
    (tmp_path / "bomb").mkdir()
    bomb = png_header_claiming(tmp_path / "bomb" / "huge.png", 30000, 30000)

    def no_decode(*a, **k):
        raise AssertionError("decoded a file that the header check should have refused")

    monkeypatch.setattr(images, "decode_image", no_decode)
    with pytest.raises(ValueError, match=r"huge\.png.*30000x30000.*max_pixels=100,000,000"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={bomb}", f"output={tmp_path / 'o'}"))
    with pytest.raises(ValueError, match=r"huge\.png.*max_pixels=1,000"):
        images.read_image(png_header_claiming(tmp_path / "huge.png", 40, 40), max_pixels=1000)
    assert images.header_pixels(bomb) == (30000, 30000)
    with pytest.raises(ValueError, match="max_pixels must be"):
        predict(_pcfg(tmp_path, f"weights={weights}", f"input={bomb}", "max_pixels=-5"))
    assert not (tmp_path / "o").exists()


def test_memory_estimate_auto_tiles_to_the_untiled_result_or_errors_with_the_hint(tmp_path):
    import inference.tiling as P
    from inference.images import Image

    net = tiny_rrdb(seed=2)
    with torch.no_grad():
        net.conv_last.bias.fill_(0.5)
    rng = np.random.default_rng(3)
    h, w = 96, 88
    img = Image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 255.0, "photo.png")
    cpu = torch.device("cpu")
    whole = P.upscale(net, img, 4, cpu, tile=0)
    result = P.OUT_BYTES_PER_PIXEL * h * w * 16
    budget_gb = 0.8 * (P.forward_bytes(net, h, w) + result) / P.GB  # the whole image does not fit; tiles do
    assert P.plan_tile(net, h, w, "auto", P.receptive_margin(net), cpu, budget_gb) > 0
    tiled = P.upscale(net, img, 4, cpu, tile="auto", max_memory=budget_gb)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    with pytest.raises(MemoryError, match=rf"photo\.png \({w}x{h}, x4\).*untiled.*tile=auto"):
        P.upscale(net, img, 4, cpu, tile=0, max_memory=budget_gb)
    with pytest.raises(MemoryError, match="tile=40.*smaller tile"):
        P.upscale(net, img, 4, cpu, tile=40, tile_pad=0, max_memory=(result + 1000) / P.GB)
    with pytest.raises(MemoryError, match="the result alone"):
        P.upscale(net, img, 4, cpu, max_memory=1e-6)
    with pytest.raises(ValueError, match="max_memory must be"):
        P.upscale(net, img, 4, cpu, max_memory="lots")
    # The 23-block x4 ESRGAN on a 4000x3000 photo: tens of GB untiled, as measured in the issue (>= 12 GB).
    with torch.device("meta"):
        assert P.forward_bytes(RRDBNet(), 3000, 4000) > 12 * P.GB


class CountedPath(str):
    """A path whose hashing and comparisons are counted (to see the clash check's complexity, not its time)."""

    calls = 0

    def __hash__(self):
        CountedPath.calls += 1
        return str.__hash__(self)

    def __eq__(self, other):
        CountedPath.calls += 1
        return str.__eq__(self, other)

    __ne__ = lambda self, other: not self.__eq__(other)  # noqa: E731

    def __fspath__(self):
        return str(self)


def test_name_clash_check_is_one_pass():
    from inference.outputs import output_clashes

    n = 8000
    paths = [f"/out/d{i % 97}/img{i}.png" for i in range(n)] + ["/out/d1/img1.png", "/out/d5/img5.png"]
    assert output_clashes(iter(paths)) == {"/out/d1/img1.png", "/out/d5/img5.png"}  # a one-shot iterator suffices
    # list.count per element (the old check) compares n^2 = 64e6 times; a set-based pass touches each path O(1) times.
    counted = [CountedPath(p) for p in paths]
    CountedPath.calls = 0
    (lambda ps: [ps.count(p) for p in ps[:50]])(counted)  # the old way, on 50 elements only: 50 * n comparisons
    assert CountedPath.calls >= 50 * n
    CountedPath.calls = 0
    output_clashes(counted)
    assert CountedPath.calls <= 4 * len(counted)


# =====================================================================================================================
# Item 10: unclear errors become errors naming the file / key / value
# =====================================================================================================================
def _train(tmp_path, *overrides):
    from runtime.training import train

    return train(
        compose_cfg(
            tmp_path,
            [*TINY_ESRGAN, "model.psnr.iters=2", "model.gan.iters=2", "trainer.val_check_interval=2", *overrides],
        )
    )


@pytest.mark.parametrize("content", ["empty", "truncated", "not_a_checkpoint", "payload"])
def test_resume_from_a_damaged_checkpoint_names_the_file(tmp_path, content):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "last.ckpt"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        fake_ckpt(path, {"_target_": "archs.rrdbnet.RRDBNet", **TINY})
        path.write_bytes(path.read_bytes()[:2000])
    elif content == "not_a_checkpoint":
        torch.save({"params": tiny_rrdb().state_dict()}, path)
    else:
        torch.save({"state_dict": {}, "x": Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"ckpt_path=.*last\.ckpt"):
        _train(tmp_path / "run", f"ckpt_path={path}")
    assert not marker.exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_resume_with_a_checkpoint_of_another_model_or_scale(tmp_path):
    from archs.scfegan_generator import SCFEGANGenerator

    face = fake_ckpt(
        tmp_path / "face.ckpt",
        {"_target_": "archs.scfegan_generator.SCFEGANGenerator", "cnum": 4},
        net=SCFEGANGenerator(cnum=4),
        task="faces",
    )
    with pytest.raises(ValueError, match=r"face\.ckpt.*'faces'.*'sr'"):
        _train(tmp_path / "a", f"ckpt_path={face}")
    gen = {"_target_": "archs.rrdbnet.RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "scale": 2, **TINY}
    x2 = fake_ckpt(tmp_path / "x2.ckpt", gen, net=tiny_rrdb(scale=2))
    with pytest.raises(ValueError, match=r"x2\.ckpt.*scale: checkpoint 2 vs run 4.*data\.scale"):
        _train(tmp_path / "b", f"ckpt_path={x2}")


def test_evaluate_with_the_wrong_checkpoint_kind_scale_or_a_damaged_file(tmp_path):
    from archs.scfegan_generator import SCFEGANGenerator
    from evaluation.run import evaluate

    val = sr_folder(tmp_path)
    x2 = save_generator_file(tmp_path / "x2.pth", tiny_rrdb(scale=2))
    with pytest.raises(ValueError, match=r"x2\.pth.*x2 generator but data\.scale=4"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={x2}", f"data.test_dirs=[{val}]"))
    face = fake_ckpt(
        tmp_path / "face.ckpt",
        {"_target_": "archs.scfegan_generator.SCFEGANGenerator", "cnum": 4},
        net=SCFEGANGenerator(cnum=4),
        task="faces",
    )
    with pytest.raises(ValueError, match=r"face\.ckpt.*not an ESRGAN generator"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={face}", f"data.test_dirs=[{val}]"))
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.ckpt"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={empty}", f"data.test_dirs=[{val}]"))


@pytest.mark.parametrize("content", ["empty", "payload", "wrong_keys", "list"])
def test_dexined_weights_errors_name_the_file(tmp_path, content):
    from synthesis.sketch import SketchExtractor

    marker = tmp_path / "ran.txt"
    path = tmp_path / "dexined.pth"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "payload":
        torch.save({"w": Payload(marker)}, path)
    elif content == "wrong_keys":
        torch.save({"conv.weight": torch.zeros(1)}, path)
    else:
        torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match=r"DexiNed weights .*dexined\.pth"):
        SketchExtractor(dexined_weights=str(path))
    assert not marker.exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.ema_decay=1.5", r"model\.ema_decay must be in \[0, 1\).*1\.5"),  # c1's check in ESRGANModule
        ("model.gan.ema_decay=-0.1", r"model\.gan\.ema_decay must be in.*-0\.1"),
        ("model.psnr.iters=0", r"model\.psnr\.iters=0.*drop it from model\.stages"),
        ("trainer.val_check_interval=0", r"trainer\.val_check_interval=0"),
        ("trainer.val_check_interval=abc", r"val_check_interval.*'abc'"),  # Lightning's own message (clear already)
        ("model.psnr.scheduler=cosine", r"model\.psnr\.scheduler='cosine'.*cosine_restart"),
        ("data.batch_size=abc", r"data\.batch_size='abc'"),
        ("data.batch_size=0", r"data\.batch_size=0"),
        ("data.num_workers=two", r"data\.num_workers='two'"),
    ],
)
def test_bad_config_values_name_the_key_and_write_nothing(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        _train(tmp_path, override)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "result.json").exists()


def test_scfegan_zero_iterations_is_an_error(tmp_path):
    from runtime.training import train

    cfg = compose_cfg(
        tmp_path,
        [
            "model=scfegan",
            "data=faces_demo",
            "logger=none",
            "model.iters=0",
            "model.generator.cnum=4",
            "model.discriminator.cnum=4",
            "model.vgg_weights=random",
        ],
    )
    with pytest.raises(Exception, match=r"model\.iters=0"):
        train(cfg)
    assert not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("content", ["empty", "truncated", "payload", "directory"])
def test_predict_and_evaluate_name_a_damaged_weights_file(tmp_path, content):
    """(Already clear before issue 12; kept as regression cases.)"""
    from evaluation.run import evaluate
    from inference.run import predict

    marker = tmp_path / "ran.txt"
    path = tmp_path / "w.pth"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        save_generator_file(path, tiny_rrdb())
        path.write_bytes(path.read_bytes()[:1500])
    elif content == "payload":
        torch.save({"params": {"conv_first.weight": Payload(marker)}}, path)
    else:
        path.mkdir()
    img = write_png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises((ValueError, FileNotFoundError), match=r"w\.pth"):
        predict(_pcfg(tmp_path, f"weights={path}", f"input={img}", f"output={tmp_path / 'o'}"))
    with pytest.raises((ValueError, FileNotFoundError), match=r"w\.pth"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={path}", f"data.test_dirs=[{sr_folder(tmp_path)}]"))
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_init_weights_of_another_generator_name_the_key(tmp_path):
    from archs.scfegan_generator import SCFEGANGenerator

    face = save_generator_file(tmp_path / "face.pth", SCFEGANGenerator(cnum=4))
    with pytest.raises(Exception, match=r"model\.init_weights=.*face\.pth.*do not fit RRDBNet"):
        _train(tmp_path / "run", f"model.init_weights={face}")
