"""SR tiles side by side on the CPU, one OpenMP thread each (ops/tile_threads.py, issue 21)."""

import threading
import time

import numpy as np
import pytest
import torch

from archs.rrdbnet import RRDBNet
from archs.srvgg import SRVGGNetCompact
from inference import tiling
from inference.images import Image
from ops import tile_threads
from ops.sr_tiles import receptive_margin, tiled_forward
from ops.tile_threads import map_tiles, tile_workers


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_workers_run_one_thread_each_and_leave_other_threads_alone(two_threads):
    assert tile_workers(5, "cpu") == 2
    assert tile_workers(1, "cpu") == 1 and tile_workers(5, "cpu", limit=1) == 1
    assert tile_workers(5, "cuda") == 1
    seen = list(map_tiles(lambda i: (i, torch.get_num_threads(), threading.get_ident()), range(5), 2))
    assert [s[0] for s in seen] == list(range(5))
    assert {s[1] for s in seen} == {1}  # each worker's own OpenMP count
    assert threading.get_ident() not in {s[2] for s in seen}
    # torch.set_num_threads in a worker would have changed these: the caller's count and a new thread's default
    assert torch.get_num_threads() == 2
    later = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [2]


def test_workers_take_the_callers_grad_and_inference_modes(two_threads):
    def modes(_):
        return torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    assert set(map_tiles(modes, range(3), 2)) == {(True, False)}
    with torch.no_grad():
        assert set(map_tiles(modes, range(3), 2)) == {(False, False)}
    with torch.inference_mode():
        assert set(map_tiles(modes, range(3), 2)) == {(False, True)}


def test_map_tiles_keeps_order_bounds_what_runs_ahead_and_raises(two_threads):
    lock, running, peak, started = threading.Lock(), [0], [0], []

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(i)
        time.sleep(0.02 * (i % 3))
        with lock:
            running[0] -= 1
        return i * i

    got = []
    for r in map_tiles(work, range(8), 2):
        got.append(r)
        time.sleep(0.03)  # a slow caller: the workers must not run away from it
        with lock:
            assert len(started) <= len(got) + 2  # the one handed over, and at most 2 more started
    assert got == [i * i for i in range(8)]
    assert peak[0] == 2

    def fails(i):
        if i == 3:
            raise ValueError("tile 3")
        return i

    with pytest.raises(ValueError, match="tile 3"):
        list(map_tiles(fails, range(8), 2))


def test_without_a_per_thread_openmp_count_tiles_run_in_turn(two_threads, monkeypatch):
    monkeypatch.setattr(tile_threads, "_openmp", [None])
    assert tile_workers(5, "cpu") == 1
    me = threading.get_ident()
    assert set(map_tiles(lambda _: threading.get_ident(), range(4), 2)) == {me}


def test_an_openmp_runtime_torch_does_not_use_is_noticed_and_tiles_run_in_turn(two_threads, monkeypatch):
    class OtherRuntime:  # e.g. another library's libgomp: setting its count leaves torch's at 2
        def omp_set_num_threads(self, n):
            pass

    monkeypatch.setattr(tile_threads, "_openmp", [OtherRuntime()])
    monkeypatch.setattr(tile_threads, "_pools", {})
    me = threading.get_ident()
    assert set(map_tiles(lambda _: threading.get_ident(), range(4), 2)) == {me}
    assert tile_threads._pools == {(2, 1): None}  # remembered: no new pool per call
    assert set(map_tiles(lambda _: threading.get_ident(), range(4), 2)) == {me}


def _srvgg() -> SRVGGNetCompact:
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=3, upscale=4, act_type="prelu").eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.0, 0.5)
    return net


@pytest.mark.parametrize("kind", ["rrdb", "srvgg"])
def test_tiled_forward_at_once_equals_in_turn(two_threads, kind):
    torch.manual_seed(0)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).eval() if kind == "rrdb" else _srvgg()
    x = torch.rand(1, 3, 44, 52)
    pad = receptive_margin(net)
    with torch.inference_mode():  # the packed fast path (RRDBNet) as predict.py runs it
        whole = net(x)
        in_turn = tiled_forward(net, x, 4, 16, pad, workers=1)
        at_once = tiled_forward(net, x, 4, 16, pad, workers=2)
    assert (at_once - in_turn).abs().max().item() <= 1e-6
    assert (at_once - whole).abs().max().item() <= 1e-5


def test_upscale_tiles_runs_tiles_at_once_with_the_same_result(two_threads, monkeypatch):
    net = _srvgg()
    rng = np.random.default_rng(0)
    img = Image(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), 255.0, "t.png")
    used, calls = [], []
    real = tiling.map_tiles

    def spy(fn, items, workers=1):
        used.append(workers)
        return real(fn, items, workers)

    monkeypatch.setattr(tiling, "map_tiles", spy)
    at_once = tiling.upscale_tiles(net, img, 4, torch.device("cpu"), 16, progress=lambda d, n: calls.append((d, n)))
    monkeypatch.setattr(tiling, "PARALLEL_TILES_BYTES", 0)  # no room for a second tile: in turn
    in_turn = tiling.upscale_tiles(net, img, 4, torch.device("cpu"), 16)
    assert used == [2, 1]
    assert calls == [(k, 12) for k in range(1, 13)]  # 3 x 4 tiles, reported in order
    assert np.array_equal(at_once, in_turn)
    assert np.abs(at_once.astype(int) - tiling.upscale(net, img, 4, torch.device("cpu"), tile=0).astype(int)).max() <= 1


def test_plan_workers_counts_tiles_memory_and_the_network(two_threads):
    net = _srvgg()
    cpu = torch.device("cpu")
    assert tiling.plan_workers(net, 64, 64, 32, 5, cpu) == 2
    assert tiling.plan_workers(net, 64, 64, 0, 5, cpu) == 1  # the whole image: one tile
    assert tiling.plan_workers(net, 64, 64, 64, 5, cpu) == 1
    per_tile = tiling.forward_bytes(net, 42, 42)
    assert tiling.plan_workers(net, 64, 64, 32, 5, cpu, max_memory=1.5 * per_tile / tiling.GB) == 1
    assert tiling.plan_workers(net, 64, 64, 32, 5, cpu, max_memory=2.5 * per_tile / tiling.GB) == 2
    big = RRDBNet(num_block=23)  # 512-px tiles with its receptive margin: gigabytes each, never two at once
    assert tiling.plan_workers(big, 2048, 2048, 512, receptive_margin(big), cpu, max_memory=1000) == 1
    assert tiling.plan_workers(torch.nn.Identity(), 64, 64, 32, 5, cpu) == 1
