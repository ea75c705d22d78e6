"""ImagePreprocessing: crop/colour/resize with known answers, augmentation, torch == OpenCV."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from rlcontrol.vision.preprocess import ImagePreprocessing, area_path, resize_weights, torch_preprocess


def constant(height: int, width: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3)).copy()


def test_default_is_the_identity_in_channel_first_layout() -> None:
    image = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    out = ImagePreprocessing()(image)
    assert out.shape == (3, 10, 12) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, image.transpose(2, 0, 1))


def test_crop_fraction_and_pixels_drop_the_named_rows_and_columns() -> None:
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    image[:, :, 0] = np.arange(8)[:, None]  # red = row index
    image[:, :, 1] = np.arange(10)[None, :]  # green = column index
    by_fraction = ImagePreprocessing(crop_top=0.25, crop_bottom=0.125, crop_left=0.1, crop_right=0.2)
    by_pixels = ImagePreprocessing(crop_top=2, crop_bottom=1, crop_left=1, crop_right=2, crop_units="pixels")
    for prep in (by_fraction, by_pixels):
        out = prep(image)
        assert prep.crop_box((8, 10)) == (2, 7, 1, 8)
        assert out.shape == (3, 5, 7) == prep.output_shape((8, 10))
        assert out[0, :, 0].tolist() == [2, 3, 4, 5, 6]  # rows 2..6 kept
        assert out[1, 0, :].tolist() == [1, 2, 3, 4, 5, 6, 7]  # columns 1..7 kept


def test_resize_of_stripes_averages_areas() -> None:
    # Columns alternate 0 / 200: halving the width averages each pair to 100; halving the
    # height of a constant image changes nothing.
    image = np.zeros((4, 8, 3), dtype=np.uint8)
    image[:, 1::2] = 200
    out = ImagePreprocessing(out_size=(2, 4))(image)
    assert out.shape == (3, 2, 4)
    assert (out == 100).all()
    # Rows 0..3 valued 0, 40, 80, 120 squeezed to 2 rows: means 20 and 100.
    rows = np.repeat(np.array([0, 40, 80, 120], dtype=np.uint8)[:, None, None], 3, axis=1).repeat(3, axis=2)
    assert ImagePreprocessing(out_size=(2, 3))(rows)[0, :, 0].tolist() == [20, 100]


def test_grayscale_uses_the_luma_weights() -> None:
    prep = ImagePreprocessing(grayscale=True)
    # 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1; white stays white.
    for rgb, grey in (((255, 0, 0), 76), ((0, 255, 0), 150), ((0, 0, 255), 29), ((255, 255, 255), 255),
                      ((100, 100, 100), 100)):
        out = prep(constant(3, 4, rgb))
        assert out.shape == (1, 3, 4) and (out == grey).all(), (rgb, out[0, 0, 0])
    assert prep.output_shape((3, 4)) == (1, 3, 4)


def test_square_out_size_and_json_round_trip() -> None:
    prep = ImagePreprocessing(crop_top=0.3, out_size=64, grayscale=True, brightness=0.1, shift=4)
    assert prep.out_size == (64, 64) and prep.output_shape((120, 160)) == (1, 64, 64)
    data = json.loads(json.dumps(prep.to_dict()))
    assert ImagePreprocessing.from_dict(data) == prep
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        ImagePreprocessing.from_dict({**data, "crop_middle": 1})


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((8, 8, 3), dtype=np.float32), "must be uint8 .H, W, 3. RGB, got float32 .8, 8, 3."),
    (np.zeros((3, 8, 8), dtype=np.uint8), "got uint8 .3, 8, 8."),
    (np.zeros((8, 8), dtype=np.uint8), "got uint8 .8, 8."),
    ([[1, 2, 3]], "must be a numpy array"),
])
def test_wrong_images_get_one_clear_error(image, message) -> None:
    with pytest.raises(ValueError, match=message):
        ImagePreprocessing()(image)


def test_crop_larger_than_the_image_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="leaves nothing of a 8x8 image"):
        ImagePreprocessing(crop_top=5, crop_bottom=3, crop_units="pixels")(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="leaves nothing"):
        ImagePreprocessing(crop_left=0.6, crop_right=0.5).output_shape((8, 8))
    for bad in ({"crop_top": 1.0}, {"crop_top": -0.1}, {"crop_top": 1.5, "crop_units": "pixels"},
                {"crop_units": "percent"}, {"out_size": (0, 4)}, {"out_size": (4, 4, 4)}, {"shift": -1},
                {"brightness": 2.0}):
        with pytest.raises(ValueError):
            ImagePreprocessing(**bad)


def test_augmentation_is_seeded_and_the_identity_when_off() -> None:
    batch = np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    off = ImagePreprocessing()
    rng = np.random.default_rng(1)
    same = off.augment(batch, rng)
    np.testing.assert_array_equal(same, batch)
    assert same is not batch and rng.random() == np.random.default_rng(1).random()  # no draws taken

    on = ImagePreprocessing(brightness=0.2, contrast=0.3, shift=2)
    first = on.augment(batch, np.random.default_rng(7))
    again = on.augment(batch, np.random.default_rng(7))
    other = on.augment(batch, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert first.shape == batch.shape and first.dtype == np.uint8
    assert not np.array_equal(first, other) and not np.array_equal(first, batch)
    one = on.augment(batch[0], np.random.default_rng(7))  # a single image = first of a batch
    np.testing.assert_array_equal(one, first[0])


def test_shift_alone_translates_with_edge_fill() -> None:
    image = np.arange(25, dtype=np.uint8).reshape(1, 5, 5) * 10
    prep = ImagePreprocessing(shift=1)
    for seed in range(10):
        out = prep.augment(image, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        rng.uniform(), rng.uniform()
        dy, dx = rng.integers(-1, 2, size=2)
        padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
        np.testing.assert_array_equal(out, padded[:, 1 + dy:6 + dy, 1 + dx:6 + dx])


def test_resize_weights_are_area_averages() -> None:
    rows, cols = resize_weights((4, 5), (2, 3))
    np.testing.assert_allclose(rows, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(cols, [[0.6, 0.4, 0, 0, 0], [0, 0.2, 0.6, 0.2, 0], [0, 0, 0, 0.4, 0.6]], atol=1e-7)


# Downscaling and crop-only are exact; upscaling uses cv2's fixed-point bilinear (see the
# module docstring), so it may differ by one grey level in ~10% of pixels. The 480x640 cases
# are a camera frame: its averages land exactly on x.5 in ~1/150 of the pixels, where only
# OpenCV's own order of float32 operations gives OpenCV's rounding.
CASES = [
    ((84, 84), ImagePreprocessing(out_size=64), 0.0),
    ((120, 160), ImagePreprocessing(crop_top=0.3, out_size=64, grayscale=True), 0.0),
    ((96, 128), ImagePreprocessing(crop_top=24, crop_left=8, crop_units="pixels", out_size=(48, 64)), 0.0),
    ((64, 64), ImagePreprocessing(out_size=32, grayscale=True), 0.0),
    ((64, 64), ImagePreprocessing(crop_bottom=0.25), 0.0),
    ((480, 640), ImagePreprocessing(out_size=64), 0.0),  # 7.5 x 10: the general area path
    ((480, 640), ImagePreprocessing(crop_top=0.3, crop_left=0.05, out_size=64, grayscale=True), 0.0),
    ((480, 640), ImagePreprocessing(out_size=(48, 64)), 0.0),  # 10 x 10: integer, sum * (1 / 100)
    ((64, 128), ImagePreprocessing(out_size=64), 0.0),  # 1 x 2: integer, ties to even
    ((128, 128), ImagePreprocessing(out_size=64), 0.0),  # 2 x 2: ties up
    ((50, 70), ImagePreprocessing(out_size=(64, 48)), 0.15),
    ((30, 30), ImagePreprocessing(out_size=64), 0.15),
]


@pytest.mark.parametrize(("input_hw", "prep", "mean_bound"), CASES)
def test_torch_matches_opencv(input_hw, prep, mean_bound) -> None:
    images = np.random.default_rng(3).integers(0, 256, (3, *input_hw, 3), dtype=np.uint8)
    expected = np.stack([prep(image) for image in images]).astype(np.int64)
    out = torch_preprocess(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), prep)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, *prep.output_shape(input_hw))
    diff = np.abs(out.numpy().astype(np.int64) - expected)
    assert diff.max() <= 1 and diff.mean() <= mean_bound, (diff.max(), diff.mean())
    # The camera's own layout (N, H, W, 3) gives the same images.
    nhwc = prep.torch_module(input_hw, layout="NHWC")(torch.from_numpy(images))
    torch.testing.assert_close(nhwc, out, rtol=0, atol=0)


def test_area_path_follows_opencvs_choice() -> None:
    assert area_path((64, 64), (64, 64)) == "copy"
    assert area_path((128, 128), (64, 64)) == "2x2"
    assert area_path((480, 640), (48, 64)) == area_path((64, 128), (64, 64)) == "integer"
    assert area_path((480, 640), (64, 64)) == area_path((84, 84), (64, 64)) == "area"
    assert area_path((50, 70), (64, 48)) == area_path((30, 30), (64, 64)) == "upscale"


def test_torch_grayscale_is_bit_exact_on_many_colours() -> None:
    colours = np.random.default_rng(4).integers(0, 256, (200, 500, 3), dtype=np.uint8)
    prep = ImagePreprocessing(grayscale=True)
    out = torch_preprocess(torch.from_numpy(colours.transpose(2, 0, 1)[None].copy()), prep)
    np.testing.assert_array_equal(out[0].numpy(), prep(colours))


def test_torch_module_float_output_and_input_checks() -> None:
    prep = ImagePreprocessing(out_size=8)
    module = prep.torch_module((16, 16), as_float=True)
    frame = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = module(frame)
    assert out.dtype == torch.float32 and tuple(out.shape) == (2, 3, 8, 8)
    torch.testing.assert_close(out, torch_preprocess(frame, prep).float() / 255)
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 3, 16, 16\) RGB frames, got torch.float32"):
        module(frame.float())
    with pytest.raises(ValueError, match="got torch.uint8 .2, 3, 12, 16."):
        module(frame[:, :, :12])
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 16, 16, 3\) RGB frames, got torch.uint8 \(2, 3, 16, 16\)"):
        prep.torch_module((16, 16), layout="NHWC")(frame)
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'"):
        prep.torch_module((16, 16), layout="HWC")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, as deploy/export.py uses
def test_torch_module_exports_to_onnx_and_runs_in_onnxruntime() -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    prep = ImagePreprocessing(crop_top=0.25, out_size=(24, 32), grayscale=True)
    module = prep.torch_module((48, 64))
    buffer = io.BytesIO()
    torch.onnx.export(module, torch.zeros(1, 3, 48, 64, dtype=torch.uint8), buffer, dynamo=False,
                      input_names=["frame"], output_names=["image"], dynamic_axes={"frame": {0: "batch"}},
                      opset_version=17)
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(5).integers(0, 256, (2, 3, 48, 64), dtype=np.uint8)
    (out,) = session.run(None, {"frame": frames})
    assert out.dtype == np.uint8 and out.shape == (2, 1, 24, 32)
    np.testing.assert_array_equal(out, torch_preprocess(torch.from_numpy(frames), prep).numpy())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_camera_frames_in_onnxruntime_equal_opencv() -> None:
    """What a camera-layout export runs: uint8 (N, 480, 640, 3) RGB through onnxruntime, compared
    with the OpenCV path itself (not the torch module) on random frames, which hit every tie."""
    onnxruntime = pytest.importorskip("onnxruntime")
    prep = ImagePreprocessing(crop_top=0.2, out_size=64)
    module = prep.torch_module((480, 640), layout="NHWC")
    buffer = io.BytesIO()
    torch.onnx.export(module, torch.zeros(1, 480, 640, 3, dtype=torch.uint8), buffer, dynamo=False,
                      input_names=["frame"], output_names=["image"], dynamic_axes={"frame": {0: "batch"}},
                      opset_version=17)
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(6).integers(0, 256, (4, 480, 640, 3), dtype=np.uint8)
    (out,) = session.run(None, {"frame": frames})
    np.testing.assert_array_equal(out, np.stack([prep(frame) for frame in frames]))
