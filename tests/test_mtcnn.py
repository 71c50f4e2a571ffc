"""MTCNN's networks (archs/mtcnn.py) and their weights from the facenet-pytorch wheel (weights/facenet_mtcnn.py):
strict loads, and clear errors naming the file for anything else."""

import tv_compat

from collections import OrderedDict

import pytest
import torch

from archs.mtcnn import ONet, PNet, RNet
from weights.facenet_mtcnn import NETS, load_mtcnn, load_net, mtcnn_files
from weights.registry_packages import RegistryPackageError


@pytest.fixture(scope="module")
def nets():
    try:
        return load_mtcnn()
    except RegistryPackageError as err:
        pytest.skip(f"MTCNN weights not available: {err}")


# ---------------------------------------------------------------------------------------------------------------------
def test_networks_take_the_shipped_files_strictly(nets):
    for name, path in mtcnn_files(download=False).items():
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = getattr(nets, name)
        assert list(state) == list(net.state_dict()), name  # same keys, same order
        for k, v in state.items():
            assert torch.equal(net.state_dict()[k], v), (name, k)
    x = torch.zeros(2, 3, 12, 12)
    reg, prob = nets.pnet(x)
    assert reg.shape == (2, 4, 1, 1) and prob.shape == (2, 2, 1, 1)
    assert [t.shape for t in nets.rnet(torch.zeros(2, 3, 24, 24))] == [(2, 4), (2, 2)]
    assert [t.shape for t in nets.onet(torch.zeros(2, 3, 48, 48))] == [(2, 4), (2, 10), (2, 2)]


class _NotWeights:
    pass


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_bad_weights_files_are_named(tmp_path, net_name):
    cls = {"pnet": PNet, "rnet": RNet, "onet": ONet}[net_name]
    good = cls().state_dict()

    def save(name, obj):
        path = tmp_path / f"{net_name}_{name}.pt"
        torch.save(obj, path)
        return path

    first = next(iter(good))
    missing = OrderedDict((k, v) for k, v in good.items() if k != first)
    extra = OrderedDict(good, stray=torch.zeros(1))
    shape = OrderedDict(good)
    shape[first] = torch.zeros(1, *good[first].shape)
    nan = OrderedDict(good)
    nan[first] = torch.full_like(good[first], float("nan"))
    cases = {
        "missing": (save("missing", missing), rf"missing keys \['{first}'\]"),
        "extra": (save("extra", extra), r"unexpected keys \['stray'\]"),
        "shape": (save("shape", shape), "size mismatch"),
        "nan": (save("nan", nan), "non-finite"),
        "list": (save("list", [1, 2]), "holds a list, not a state dict"),
        "object": (save("object", {"x": _NotWeights()}), "not a readable torch state dict"),
    }
    for case, (path, message) in cases.items():
        with pytest.raises(ValueError, match=message) as err:
            load_net(net_name, path)
        assert str(path) in str(err.value) and f"MTCNN {net_name}" in str(err.value), case
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_net(net_name, tmp_path / "nowhere.pt")
    assert torch.equal(load_net(net_name, save("good", good)).state_dict()[first], good[first])
    with pytest.raises(ValueError, match="must be one of"):
        load_net("qnet", save("good2", good))
