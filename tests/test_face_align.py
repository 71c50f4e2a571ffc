"""Real photos: MTCNN detection (weights from the facenet-pytorch wheel), CelebA-HQ alignment, and editing a face crop
pasted back only inside the user's mask (inference/face_align.py).

The scenes are CelebAMask-HQ faces rotated 15-30 degrees, scaled 0.6-2.2x and placed into 1400 x 1000 photos
(tests/face_scenes.py); the eye labels, followed through the known transform, are the ground truth."""

import tv_compat

import functools
import logging
import math

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_data
from face_scenes import (
    L_LIP,
    MOUTH,
    PHOTO_HW,
    SCENES,
    U_LIP,
    apply,
    background,
    eye_centres,
    face_to_photo,
    invert,
    labelled_faces,
    place,
    scene,
)

from inference.face_align import (
    Face,
    celebahq_transform,
    choose_face,
    detect_faces,
    edit_photo,
    mask_crop_transform,
    nms,
)
from inference.faces import run_network as shared_step
from inference.images import read_image, write_png
from weights.facenet_mtcnn import load_mtcnn
from weights.registry_packages import RegistryPackageError

SIZE = (512, 512)


@pytest.fixture(scope="module")
def nets():
    try:
        return load_mtcnn()
    except RegistryPackageError as err:
        pytest.skip(f"MTCNN weights not available: {err}")


@pytest.fixture(scope="module")
def faces():
    return labelled_faces(shared_data("faces", "celebamask_mini"), 6)


def _io(eyes: np.ndarray) -> float:
    return float(np.linalg.norm(eyes[1] - eyes[0]))


# ---------------------------------------------------------------------------------------------------------------------
# Hand-computed pieces: NMS and the CelebA-HQ transform
# ---------------------------------------------------------------------------------------------------------------------
def test_nms_by_hand():
    boxes = torch.tensor([[0, 0, 9, 9], [1, 0, 10, 9], [20, 20, 29, 29], [0, 0, 4, 4.0]])
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    # IoU(0, 1) = 90 / 110 = 0.82; box 3 lies inside box 0: IoU 25 / 100, "min" overlap 25 / 25 = 1.
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.85).tolist() == [1, 0, 3, 2]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_celebahq_transform_by_hand():
    # Upright face: eyes at (200, 250) and (300, 250), mouth corners at (215, 350) and (285, 350).
    lm = np.array([[200, 250], [300, 250], [250, 300], [215, 350], [285, 350.0]])
    # eye_to_eye = (100, 0), eye_to_mouth = (0, 100): x = (100, 0) - rot90((0, 100)) = (200, 0), rescaled to
    # max(2 x 100, 1.8 x 100) = 200; y = (0, 200); c = (250, 250) + 0.1 x (0, 100) = (250, 260).
    # The 400-pixel square around c maps to 512 x 512: 400 / 512 photo pixels per crop pixel.
    m = celebahq_transform(lm, SIZE)
    p = 400 / 512
    np.testing.assert_allclose(m[:, :2], [[p, 0], [0, p]], atol=1e-12)
    # Crop pixel centres 0 and 511 sit half a crop pixel inside the square's edges 50 and 450 (x), 60 and 460 (y).
    np.testing.assert_allclose(apply(m, [[0, 0], [511, 511]]), [[50 + p / 2, 60 + p / 2], [450 - p / 2, 460 - p / 2]])
    # Equivariance: turning, scaling and moving the photo moves the crop with it.
    a = face_to_photo((512, 512), 27.0, 1.7, (900, 400))
    m2 = celebahq_transform(apply(a, lm), SIZE)
    np.testing.assert_allclose(m2, (np.vstack([a, [0, 0, 1]]) @ np.vstack([m, [0, 0, 1]]))[:2], atol=1e-9)
    with pytest.raises(ValueError, match="5 finite"):
        celebahq_transform(lm[:4], SIZE)
    with pytest.raises(ValueError, match="degenerate"):
        celebahq_transform(np.zeros((5, 2)), SIZE)


def test_mask_crop_transform_by_hand():
    mask = np.zeros((1000, 1400), bool)
    mask[400:600, 600:900] = True  # 300 x 200 box; with 25 % margins 450 x 300: fits 512 at 1:1
    np.testing.assert_allclose(mask_crop_transform(mask, SIZE), [[1, 0, 749.5 - 255.5], [0, 1, 499.5 - 255.5]])
    # 800 wide -> 1200 with margins: 1200 / 512 photo pixels per crop pixel; the 1200-pixel crop is moved right to
    # stay on the photo (left edge at -0.5, centre 599.5) and centred on it vertically (taller than the photo).
    mask[400:600, 100:900] = True
    p = 1200 / 512
    np.testing.assert_allclose(mask_crop_transform(mask, SIZE), [[p, 0, 599.5 - p * 255.5], [0, p, 499.5 - p * 255.5]])
    mask[:, 100:1300] = True  # 1200 wide -> 1800: capped at the scale that shows the whole photo, 1400 / 512
    p = 1400 / 512
    np.testing.assert_allclose(mask_crop_transform(mask, SIZE), [[p, 0, 699.5 - p * 255.5], [0, p, 499.5 - p * 255.5]])
    small = np.zeros((200, 300), bool)
    small[10:20, 10:20] = True  # photo smaller than the network: scaled to just fit (300 / 512), not blown up more
    p = 300 / 512
    np.testing.assert_allclose(mask_crop_transform(small, SIZE), [[p, 0, 149.5 - p * 255.5], [0, p, 99.5 - p * 255.5]])
    same = np.zeros(SIZE, bool)
    same[300:400, 10:200] = True  # a photo of the network's size: the identity, whatever the mask
    np.testing.assert_array_equal(mask_crop_transform(same, SIZE), [[1, 0, 0], [0, 1, 0]])
    odd = np.zeros((1000, 1400), bool)
    odd[500:601, 700:800] = True  # 1:1 crops sit on whole pixels (centre 749.5 - 255.5 = 494, 550 - 255.5 -> 294)
    np.testing.assert_array_equal(mask_crop_transform(odd, SIZE), [[1, 0, 494], [0, 1, 294]])


# ---------------------------------------------------------------------------------------------------------------------
# Detection on the faces, as they are and turned, scaled and placed in larger photos
# ---------------------------------------------------------------------------------------------------------------------
def test_landmarks_on_aligned_faces(nets, faces):
    errors = []
    for stem, rgb, labels in faces:
        found = detect_faces(rgb, nets)
        assert len(found) >= 1, stem
        eyes = eye_centres(labels)
        errors.append(np.linalg.norm(found[0].landmarks[:2] - eyes, axis=1).max() / _io(eyes))
        # The CelebA-HQ crop of an already aligned CelebA-HQ face is close to the identity.
        m = celebahq_transform(found[0].landmarks, SIZE)
        assert abs(math.degrees(math.atan2(m[1, 0], m[0, 0]))) < 3, stem
        assert 0.85 < math.hypot(m[0, 0], m[1, 0]) < 1.2, stem
    assert max(errors) < 0.12 and np.median(errors) < 0.07, errors


@pytest.mark.slow
def test_landmarks_on_turned_scaled_padded_faces(nets, faces):
    """Eyes within 15 % of the eye distance of the labelled eyes (median under 7 %); the five landmarks agree with
    those found on the original face within 12 %; the aligned crop frames the face as the dataset does."""
    eye_err, consistency = [], []
    for k, (stem, rgb, labels) in enumerate(faces):
        photo, m = scene(rgb, k)
        assert photo.shape[:2] == PHOTO_HW
        found = detect_faces(photo, nets)
        assert found, (stem, SCENES[k])
        eyes = eye_centres(labels)
        back = apply(invert(m), found[0].landmarks)
        eye_err.append(np.linalg.norm(back[:2] - eyes, axis=1).max() / _io(eyes))
        orig = detect_faces(rgb, nets)[0].landmarks
        consistency.append(np.linalg.norm(back - orig, axis=1).max() / _io(eyes))
        # In the aligned crop, the labelled eyes are level and where they are in the (aligned) dataset image.
        in_crop = apply(invert(celebahq_transform(found[0].landmarks, SIZE)), apply(m, eyes))
        d = in_crop[1] - in_crop[0]
        assert abs(math.degrees(math.atan2(d[1], d[0]))) < 8, (stem, in_crop)
        assert np.linalg.norm(in_crop.mean(0) - eyes.mean(0)) < 0.15 * _io(eyes), (stem, in_crop, eyes)
        assert 0.9 < np.linalg.norm(d) / _io(eyes) < 1.1, stem
    assert max(eye_err) < 0.15 and np.median(eye_err) < 0.07, eye_err
    assert max(consistency) < 0.12, consistency


def test_detection_reads_every_layout(nets, faces):
    """16-bit, RGBA, gray and float photos give the faces the 8-bit RGB photo gives."""
    _, rgb, _ = faces[5]
    photo, _ = scene(rgb, 5)
    ref = detect_faces(photo, nets)[0].landmarks
    layouts = {
        "uint16": photo.astype(np.uint16) * 257,
        "rgba": np.dstack([photo, np.zeros(PHOTO_HW, np.uint8)]),
        "float64": photo / 255.0,
    }
    for name, px in layouts.items():
        np.testing.assert_allclose(detect_faces(px, nets)[0].landmarks, ref, atol=0.5, err_msg=name)
    gray = detect_faces(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), nets)[0].landmarks
    assert np.abs(gray - ref).max() < 0.1 * _io(ref[:2]), "gray"


def test_no_face_in_a_face_free_photo(nets):
    assert detect_faces(background(PHOTO_HW, 123), nets) == []


# ---------------------------------------------------------------------------------------------------------------------
# Editing: the generated pixels land inside the mask, nothing else changes
# ---------------------------------------------------------------------------------------------------------------------
class Stub:
    """A network that paints its crop coordinates: R = u / (W - 1), G = v / (H - 1), B = 0.25, and records what it
    saw.  Pasted back, each edited photo pixel must carry the crop position the inverse transform gives it."""

    def __init__(self, kind="coords"):
        self.kind = kind
        self.calls = []

    def __call__(self, image, mask, sketch, color):
        self.calls.append((image, mask, sketch, color))
        h, w = mask.shape
        if self.kind == "magenta":
            return np.broadcast_to(np.array([1.0, 0.0, 1.0], np.float32), (h, w, 3)).copy()
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        return np.dstack([u / (w - 1), v / (h - 1), np.full_like(u, 0.25)])


def _mouth_mask(labels: np.ndarray, m: np.ndarray, hw) -> np.ndarray:
    """The mouth and lips, grown by 6 pixels, taken into the photo (nearest)."""
    mouth = np.isin(labels, [MOUTH, U_LIP, L_LIP]).astype(np.uint8)
    mouth = cv2.dilate(mouth, np.ones((13, 13), np.uint8))
    return cv2.warpAffine(mouth, m, (hw[1], hw[0]), flags=cv2.INTER_NEAREST) > 0


def _interior(mask: np.ndarray, r: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0


def _check_coords(res, mask, full, stub, size=SIZE):
    """Inside the mask (away from its edge) each pixel shows the crop position photo_to_crop maps it to."""
    h, w = size
    edge = math.ceil(3 * max(res.scale, 1.0)) + 2
    inner = _interior(mask, edge)
    assert inner.sum() > 200
    ys, xs = np.nonzero(inner)
    # (Within half a pixel of the crop's edge, the edge pixel's value is what there is.)
    uv = np.clip(apply(invert(res.crop_to_photo), np.stack([xs, ys], 1)), 0, [w - 1, h - 1])
    got = res.pixels[ys, xs].astype(np.float64) / full
    if got.ndim == 1:  # gray: luma of the stub's colour
        return
    tol = 0.3 + 0.5 * max(h, w) / full  # a third of a crop pixel, plus the photo's quantisation step
    np.testing.assert_allclose(got[:, 0] * (w - 1), uv[:, 0], atol=tol)
    np.testing.assert_allclose(got[:, 1] * (h - 1), uv[:, 1], atol=tol)
    np.testing.assert_allclose(got[:, 2], 0.25, atol=1.5 / full)


def test_edit_face_in_a_photo_lands_in_the_mask(nets, faces):
    _, rgb, labels = faces[0]
    photo8, m = scene(rgb, 0)
    mask = _mouth_mask(labels, m, PHOTO_HW)
    photo16 = photo8.astype(np.uint16) * 257 + np.uint16(3)  # true 16-bit values
    stub = Stub()
    res = edit_photo(photo16, mask, None, None, stub, SIZE, nets=nets)
    assert res.mode == "face" and res.face is not None and "aligned face crop" in res.note
    assert res.pixels.dtype == np.uint16 and res.pixels.shape == photo16.shape
    assert np.array_equal(res.pixels[~mask], photo16[~mask])  # outside the mask: bit-identical
    assert (res.pixels[mask] != photo16[mask]).any(axis=1).mean() > 0.99
    _check_coords(res, mask, 65535.0, stub)
    # The network saw the aligned face: its mask is the mouth, below the eyes' level and centred, and covers every
    # masked photo pixel.
    ((image, mask_c, sketch_c, color_c),) = stub.calls
    assert image.shape == (*SIZE, 3) and image.dtype == np.float32 and sketch_c is None and color_c is None
    ys, xs = np.nonzero(mask)
    uv = np.rint(apply(invert(res.crop_to_photo), np.stack([xs, ys], 1))).astype(int)
    assert mask_c[uv[:, 1], uv[:, 0]].all()
    cy, cx = np.argwhere(mask_c).mean(0)
    mouth_y, mouth_x = np.argwhere(np.isin(labels, [MOUTH, U_LIP, L_LIP])).mean(0)
    assert abs(cx - mouth_x) < 25 and abs(cy - mouth_y) < 25, ((cx, cy), (mouth_x, mouth_y))
    # The aligned crop looks like the dataset image (same framing): correlated with the original face.
    corr = np.corrcoef(image.mean(2).ravel(), rgb.astype(np.float32).mean(2).ravel())[0, 1]
    assert corr > 0.7, corr


@pytest.mark.parametrize("layout", ["rgb8", "rgba8", "gray16", "float"])
def test_layouts_are_kept_and_the_rest_is_bit_identical(nets, faces, layout):
    _, rgb, labels = faces[1]
    photo8, m = scene(rgb, 1)
    mask = _mouth_mask(labels, m, PHOTO_HW)
    rng = np.random.default_rng(5)
    if layout == "rgb8":
        px, full = photo8, 255.0
    elif layout == "rgba8":
        px, full = np.dstack([photo8, rng.integers(0, 256, PHOTO_HW, dtype=np.uint8)]), 255.0
    elif layout == "gray16":
        px, full = cv2.cvtColor(photo8, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257, 65535.0
    else:
        px, full = photo8.astype(np.float32) / 255.0, 65535.0
    res = edit_photo(px, mask, None, None, Stub("magenta"), SIZE, nets=nets)
    assert res.mode == "face"
    ref = np.round(px * 65535).astype(np.uint16) if layout == "float" else px
    assert res.pixels.dtype == ref.dtype and res.pixels.shape == ref.shape
    assert np.array_equal(res.pixels[~mask], ref[~mask])
    inner = _interior(mask, 4)
    if layout == "gray16":
        want = np.round((0.299 + 0.114) * 65535)  # BT.601 luma of magenta
        assert np.abs(res.pixels[inner].astype(int) - want).max() <= 1
    else:
        assert (res.pixels[inner][:, :3] == np.array([full, 0, full])).all()
    if layout == "rgba8":
        assert np.array_equal(res.pixels[..., 3], px[..., 3])  # alpha untouched, even inside the mask
    # Nearly every masked pixel is fully the network's (only a rim blends with the surroundings).
    changed = res.pixels[mask] != ref[mask]
    assert (changed if changed.ndim == 1 else changed.any(axis=1)).mean() > 0.98


def test_sketch_and_colour_follow_the_face(nets, faces):
    _, rgb, labels = faces[2]
    photo, m = scene(rgb, 2)
    mask = _mouth_mask(labels, m, PHOTO_HW)
    ys, xs = np.nonzero(mask)
    sketch = np.zeros(PHOTO_HW, bool)
    cy = int(ys.mean())
    sketch[cy, xs.min() : xs.max() + 1] = True  # a 1-pixel horizontal line through the mouth (tilted in the crop)
    color = np.zeros((*PHOTO_HW, 3), np.float32)
    color[cy + 6 : cy + 20, xs.min() + 10 : xs.max() - 10] = (0.2, 0.6, 0.9)
    sketch_out = np.zeros(PHOTO_HW, bool)
    sketch_out[10, 10:60] = True  # outside the mask: not passed on
    stub = Stub()
    res = edit_photo(photo, mask, sketch | sketch_out, color, stub, SIZE, nets=nets)
    ((_, mask_c, sketch_c, color_c),) = stub.calls
    assert sketch_c.any() and not (sketch_c & ~mask_c).any()
    # Every sketch pixel of the crop lies on the drawn line (within 2 photo pixels), and the line is not lost.
    vs, us = np.nonzero(sketch_c)
    back = apply(res.crop_to_photo, np.stack([us, vs], 1))
    assert np.abs(back[:, 1] - cy).max() < 2 + res.scale
    assert sketch_c.sum() >= 0.8 * sketch.sum() / res.scale
    # Colour strokes keep their colour exactly (never darkened by the black "no stroke" around them).
    hit = color_c.max(axis=2) > 0
    assert hit.sum() > 50
    np.testing.assert_allclose(color_c[hit], np.broadcast_to([0.2, 0.6, 0.9], color_c[hit].shape), atol=1e-5)
    assert np.array_equal(res.pixels[~mask], photo[~mask])


def test_the_face_holding_the_mask_is_edited(nets, faces):
    """Two people: the mask on the smaller face edits that face's crop, not the larger one's."""
    (_, big, _), (_, small, small_labels) = faces[3], faces[4]
    m_big = face_to_photo(big.shape[:2], 20.0, 1.4, (420, 500))
    m_small = face_to_photo(small.shape[:2], -15.0, 0.8, (1100, 480))
    photo = place(small, m_small, place(big, m_big, background(PHOTO_HW, 9)))
    mask = _mouth_mask(small_labels, m_small, PHOTO_HW)
    found = detect_faces(photo, nets)
    assert len(found) >= 2
    res = edit_photo(photo, mask, None, None, Stub("magenta"), SIZE, faces=found)
    assert res.mode == "face"
    centre = (res.face.box[:2] + res.face.box[2:]) / 2
    assert np.linalg.norm(centre - [1100, 480]) < 80, res.face.box
    assert np.array_equal(res.pixels[~mask], photo[~mask])
    assert choose_face(found, None, SIZE) is found[0] and found[0].area > res.face.area  # no mask: the largest


def test_no_face_falls_back_to_a_crop_around_the_mask(nets):
    photo = background(PHOTO_HW, 77).astype(np.uint16) * 257  # 16 bits: the stub's coordinates to 1/65535
    mask = np.zeros(PHOTO_HW, bool)
    cv2.ellipse(mask.view(np.uint8), (700, 500), (140, 90), 30, 0, 360, 1, -1)
    stub = Stub()
    res = edit_photo(photo, mask, None, None, stub, SIZE, nets=nets)
    assert res.mode == "mask_crop" and res.face is None and "no face found" in res.note
    np.testing.assert_allclose(res.crop_to_photo, mask_crop_transform(mask, SIZE))
    assert res.scale == pytest.approx(1.0)  # a 1:1 crop: the mask fits 512 x 512 with its margin
    assert np.array_equal(res.pixels[~mask], photo[~mask])
    _check_coords(res, mask, 65535.0, stub)
    # The mask sits in the middle of the network's crop.
    cy, cx = np.argwhere(stub.calls[0][1]).mean(0)
    assert abs(cx - 255.5) < 3 and abs(cy - 255.5) < 3


def test_mask_at_the_photo_edge_and_larger_than_the_network(nets):
    photo = background(PHOTO_HW, 78).astype(np.uint16) * 257
    mask = np.zeros(PHOTO_HW, bool)
    mask[600:, 500:1400] = True  # touches the bottom and right edges, 900 wide: the crop shrinks 1350 / 512 = 2.6x
    stub = Stub()
    res = edit_photo(photo, mask, None, None, stub, SIZE, nets=nets)
    assert res.mode == "mask_crop" and res.scale == pytest.approx(900 * 1.5 / 512)
    assert np.array_equal(res.pixels[~mask], photo[~mask])
    _check_coords(res, mask, 65535.0, stub)


def test_network_sized_aligned_face_is_edited_in_place(nets, faces):
    """A dataset image (512 x 512, CelebA-HQ framing) is not resampled: the network's pixels are pasted as they are."""
    _, rgb, labels = faces[0]
    mask = _mouth_mask(labels, np.array([[1.0, 0, 0], [0, 1, 0]]), SIZE)
    stub = Stub()
    res = edit_photo(rgb, mask, None, None, stub, SIZE, nets=nets)
    assert res.mode == "face" and "edited in place" in res.note
    np.testing.assert_array_equal(res.crop_to_photo, [[1, 0, 0], [0, 1, 0]])
    assert np.array_equal(stub.calls[0][0], rgb.astype(np.float32) / 255)  # the network saw the photo itself
    ys, xs = np.nonzero(mask)
    want = np.round(np.stack([xs / 511, ys / 511, np.full(len(xs), 0.25)], 1) * 255)
    assert np.array_equal(res.pixels[ys, xs], want)  # exactly the network's pixels, no resampling
    assert np.array_equal(res.pixels[~mask], rgb[~mask])
    # The same face turned 20 degrees in a 512 x 512 photo is aligned, not edited in place.
    m = face_to_photo(SIZE, 20.0, 0.8, (255.5, 255.5))
    turned = place(rgb, m, background(SIZE, 4))
    res = edit_photo(turned, _mouth_mask(labels, m, SIZE), None, None, Stub(), SIZE, nets=nets)
    assert res.mode == "face" and "edited in place" not in res.note
    assert abs(math.degrees(math.atan2(res.crop_to_photo[1, 0], res.crop_to_photo[0, 0])) + 20) < 5


def test_mask_outside_the_face_crop_uses_the_mask_crop(nets, faces):
    _, rgb, labels = faces[0]
    photo, m = scene(rgb, 0)
    mask = np.zeros(PHOTO_HW, bool)
    mask[850:950, 1250:1350] = True  # background corner, far from the face
    res = edit_photo(photo, mask, None, None, Stub("magenta"), SIZE, nets=nets)
    assert res.mode == "mask_crop" and "outside the aligned face crop" in res.note
    assert np.array_equal(res.pixels[~mask], photo[~mask])
    assert (res.pixels[_interior(mask, 3)] == [255, 0, 255]).all()
    res = edit_photo(photo, _mouth_mask(labels, m, PHOTO_HW), None, None, Stub("magenta"), SIZE, align=False)
    assert res.mode == "mask_crop" and "alignment off" in res.note


def test_bad_inputs_are_named():
    px = np.zeros((100, 120, 3), np.uint8)
    mask = np.zeros((100, 120), bool)
    mask[40:60, 50:70] = True
    stub = Stub("magenta")
    cases = [
        ({"pixels": np.zeros((100, 120, 5), np.uint8)}, r"H x W x 4 \(RGBA\), got shape \(100, 120, 5\)"),
        ({"pixels": px.astype(np.int32)}, "uint8, uint16 or float, got int32"),
        ({"pixels": [[0]]}, "image must be a numpy array, got list"),
        ({"pixels": np.full((100, 120, 3), np.nan, np.float32)}, "non-finite"),
        ({"mask": np.ones((120, 100), bool)}, r"mask is 100x120 but the image is 120x100 \(width x height\)"),
        ({"mask": mask.astype(np.uint8)}, "mask must be a boolean array"),
        ({"mask": np.zeros((100, 120), bool)}, "the mask is empty"),
        ({"sketch": np.ones((10, 10), bool)}, "sketch is 10x10 but the image is 120x100"),
        ({"color": np.ones((100, 120), np.float32)}, "colour strokes must be H x W x 3"),
        ({"color": np.full((100, 120, 3), 2.0, np.float32)}, r"color must hold RGB values in \[0, 1\]"),
        ({"size": (0, 512)}, "positive sides"),
        ({"size": "big"}, "size must be"),
        ({"run_network": "G.pth"}, "run_network must be callable"),
        ({"run_network": lambda *a: np.zeros((10, 10, 3))}, r"run_network returned shape \(10, 10, 3\)"),
        ({"run_network": lambda i, *a: np.full(i.shape, np.inf)}, "run_network returned non-finite"),
    ]
    for change, message in cases:
        args = {"pixels": px, "mask": mask, "sketch": None, "color": None, "run_network": stub, "size": SIZE}
        args.update(change)
        with pytest.raises((ValueError, TypeError), match=message):
            edit_photo(
                args.pop("pixels"),
                args.pop("mask"),
                args.pop("sketch"),
                args.pop("color"),
                args.pop("run_network"),
                args.pop("size"),
                align=False,
            )
    with pytest.raises(ValueError, match="H x W x 4 image array, got"):
        detect_faces(np.zeros((10, 10, 5)), nets=object())
    fake = Face(np.array([0, 0, 10, 10.0]), 1.0, np.array([[3, 3], [7, 3], [5, 5], [4, 7], [6, 7.0]]))
    assert edit_photo(px, mask, None, None, stub, SIZE, faces=[fake]).mode == "mask_crop"  # its crop misses the mask


def test_real_generator_through_run_network(nets, faces):
    """The run_network contract with the real SC-FEGAN generator (tiny, random) at 128 x 128: its input built as the
    official demo does, its output pasted inside the mask only."""
    from app_fixtures import tiny_face_net

    from archs.scfegan_generator import make_generator_input

    net = tiny_face_net()

    def run_network(image, mask, sketch, color):
        def t(a):
            a = a[..., None] if a.ndim == 2 else a
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]

        m = t(mask)
        s = t(sketch) if sketch is not None else torch.zeros_like(m)
        c = t(color) * 2 - 1 if color is not None else -torch.ones(1, 3, *mask.shape)
        with torch.no_grad():
            y = net(make_generator_input(t(image) * 2 - 1, s * m, c * m, m, torch.zeros_like(m)))
        return ((y[0].permute(1, 2, 0).numpy() + 1) * 0.5).clip(0, 1)

    _, rgb, labels = faces[0]
    photo, m = scene(rgb, 0)
    mask = _mouth_mask(labels, m, PHOTO_HW)
    res = edit_photo(photo, mask, None, None, run_network, (128, 128), nets=nets)
    assert res.mode == "face" and res.scale > 3  # a 512-pixel face (x1.3) into 128 x 128
    assert np.array_equal(res.pixels[~mask], photo[~mask])
    assert (res.pixels[mask] != photo[mask]).any(axis=1).mean() > 0.9
    # The shared network step (predict.py and the app) is this contract: the same pixels with zero noise.
    shared = edit_photo(
        photo, mask, None, None, functools.partial(shared_step, net, noise="zero"), (128, 128), nets=nets
    )
    assert np.array_equal(shared.pixels, res.pixels)


# -- predict.py and the app on a photo: the same path ------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_files(tmp_path_factory, faces):
    """A CelebAMask face turned, scaled and pasted into a 1400 x 1000 canvas (scene 1), its mouth mask, and an
    exported tiny SC-FEGAN generator working at 128 x 128."""
    from app_fixtures import write_weights

    root = tmp_path_factory.mktemp("photo")
    _, rgb, labels = faces[1]
    photo, m = scene(rgb, 1)
    mask = _mouth_mask(labels, m, PHOTO_HW)
    return {
        "photo": photo,
        "mask": mask,
        "photo_p": write_png(root / "photo.png", photo),
        "mask_p": write_png(root / "mask.png", mask.astype(np.uint8) * 255),
        "weights": write_weights(root / "w"),
    }


def test_predict_and_app_edit_a_pasted_face_only_inside_the_mask(tmp_path, nets, photo_files, caplog, monkeypatch):
    from conftest import compose_cfg

    from inference.run import predict

    f = photo_files
    base = [
        "device=cpu",
        "model=scfegan",
        f"weights={f['weights']['face']}",
        f"input={f['photo_p']}",
        f"mask={f['mask_p']}",
    ]
    with caplog.at_level(logging.INFO, logger="inference.run"):
        (out,) = predict(compose_cfg(tmp_path, [*base, f"output={tmp_path / 'a.png'}"], config_name="predict"))
    res = read_image(out).pixels
    photo, mask = f["photo"], f["mask"]
    assert res.shape == photo.shape and res.dtype == np.uint8
    assert np.array_equal(res[~mask], photo[~mask])  # outside the mask: bit-identical
    assert (res[mask] != photo[mask]).any(axis=1).mean() > 0.9
    assert "aligned face crop (CelebA-HQ)" in caplog.text
    # align=false: the crop around the mask (also only inside it), said in the log
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="inference.run"):
        (out2,) = predict(
            compose_cfg(tmp_path, [*base, "align=false", f"output={tmp_path / 'b.png'}"], config_name="predict")
        )
    res2 = read_image(out2).pixels
    assert "crop around the mask (alignment off)" in caplog.text
    assert np.array_equal(res2[~mask], photo[~mask]) and not np.array_equal(res2, res)
    # The app's /edit_face gives predict.py's pixels (same weights, seed and path), its message names the crop; the
    # editor's Generate too, with the face detected once per upload.
    from app_fixtures import app_overrides

    from webui import handlers
    from webui.models import ModelStore

    store = ModelStore(compose_cfg(tmp_path, app_overrides(f["weights"]), config_name="app"))
    calls = []
    real = handlers.detect_faces

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(handlers, "detect_faces", counting)
    api_p, msg = handlers.edit_face_files(store, str(f["photo_p"]), str(f["mask_p"]), out_dir=tmp_path / "o")
    assert np.array_equal(read_image(api_p).pixels, res)
    assert "aligned face crop (CelebA-HQ)" in msg
    erase = np.zeros((*PHOTO_HW, 4), np.uint8)
    erase[mask] = 255
    for _ in range(2):
        ed_p, msg = handlers.edit_face_editor(store, str(f["photo_p"]), {"layers": [erase]}, out_dir=tmp_path / "o")
        assert np.array_equal(read_image(ed_p).pixels, res) and "aligned face crop" in msg
    assert len(calls) == 1  # detection ran once for the upload (the API call), reused by both Generates
