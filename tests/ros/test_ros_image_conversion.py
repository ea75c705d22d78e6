"""sensor_msgs/Image fields -> uint8 (C, H, W): pure unit tests of ros_nodes.image_conversion (no ROS
graph, no messages): every encoding against hand-built arrays, row padding, byte order, resize,
grayscale weights and every malformed case."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ros_nodes.image_conversion import ENCODINGS, ImageConverter, MalformedImage, image_to_chw

H, W = 6, 5
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)  # the picture, HWC
ALPHA = RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)


def fields(hwc: np.ndarray, encoding: str, pad: int = 0, pad_value: int = 255) -> tuple:
    """(encoding, height, width, step, data) of an image message holding `hwc`, each row followed
    by `pad` bytes of `pad_value` (drivers align rows; the padding must never reach the policy)."""
    height, width = hwc.shape[:2]
    rows = hwc.reshape(height, -1).view(np.uint8)
    step = rows.shape[1] + pad
    data = np.full((height, step), pad_value, dtype=np.uint8)
    data[:, :rows.shape[1]] = rows
    return encoding, height, width, step, data.tobytes()


def gray_bt601(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's RGB->gray: (9798 R + 19235 G + 3735 B + 2**14) >> 15 (0.299, 0.587, 0.114)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((9798 * r + 19235 * g + 3735 * b + (1 << 14)) >> 15).astype(np.uint8)


def chw(hwc: np.ndarray) -> np.ndarray:
    return hwc.transpose(2, 0, 1) if hwc.ndim == 3 else hwc[None]


@pytest.mark.parametrize("encoding, hwc", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, ALPHA], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], ALPHA], axis=2)),
])
def test_colour_encodings_give_the_rgb_picture(encoding, hwc):
    out = ImageConverter(3, H, W).convert(*fields(np.ascontiguousarray(hwc), encoding))
    np.testing.assert_array_equal(out, chw(RGB))
    assert out.dtype == np.uint8 and out.shape == (3, H, W) and out.flags.c_contiguous


@pytest.mark.parametrize("encoding, hwc", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, ALPHA], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], ALPHA], axis=2)),
])
def test_grayscale_policy_gets_bt601_weights(encoding, hwc):
    out = ImageConverter(1, H, W).convert(*fields(np.ascontiguousarray(hwc), encoding))
    np.testing.assert_array_equal(out, gray_bt601(RGB)[None])


def test_grayscale_of_pure_colours():
    pure = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    out = ImageConverter(1, 1, 5).convert(*fields(pure, "rgb8"))
    np.testing.assert_array_equal(out, [[[76, 150, 29, 255, 0]]])  # round(255 * 0.299 / 0.587 / 0.114)


def test_mono8_to_gray_and_to_rgb():
    gray = RGB[..., 0].copy()
    np.testing.assert_array_equal(ImageConverter(1, H, W).convert(*fields(gray, "mono8")), gray[None])
    np.testing.assert_array_equal(ImageConverter(3, H, W).convert(*fields(gray, "mono8")), np.stack([gray] * 3))


@pytest.mark.parametrize("big_endian", [False, True], ids=["little-endian", "big-endian"])
def test_mono16_is_scaled_to_8_bits_in_its_byte_order(big_endian):
    values = np.array([[0, 128, 129, 257, 385, 386, 65535, 25828]], dtype=np.uint16)  # round(v / 257)
    expected = np.array([[0, 0, 1, 1, 1, 2, 255, 100]], dtype=np.uint8)
    stored = values.astype(">u2" if big_endian else "<u2")
    out = ImageConverter(1, 1, values.shape[1]).convert(*fields(stored, "mono16", pad=3), is_bigendian=big_endian)
    np.testing.assert_array_equal(out, expected[None])
    wrong = ImageConverter(1, 1, values.shape[1]).convert(*fields(stored, "mono16", pad=3),
                                                          is_bigendian=not big_endian)
    assert not np.array_equal(wrong, expected[None])  # the flag is honoured, not ignored


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8"])
@pytest.mark.parametrize("pad", [1, 3, 64])
def test_row_padding_in_step_is_skipped(encoding, pad):
    hwc = {"rgb8": RGB, "bgr8": RGB[..., ::-1], "rgba8": np.concatenate([RGB, ALPHA], axis=2),
           "mono8": RGB[..., :1]}[encoding]
    converter = ImageConverter(3, H, W)
    tight = converter.convert(*fields(np.ascontiguousarray(hwc), encoding)).copy()
    padded = converter.convert(*fields(np.ascontiguousarray(hwc), encoding, pad=pad, pad_value=200))
    np.testing.assert_array_equal(padded, tight)


def test_output_goes_into_the_preallocated_buffer():
    converter = ImageConverter(3, H, W)
    out = np.zeros((3, H, W), np.uint8)
    assert converter.convert(*fields(RGB, "bgr8"), out=out) is out
    assert converter.convert(*fields(RGB, "rgb8")) is converter.out  # its own buffer by default
    with pytest.raises(ValueError, match="out must be uint8"):
        converter.convert(*fields(RGB, "rgb8"), out=np.zeros((3, H, W), np.float32))


def test_block_image_is_area_averaged_to_the_policy_size():
    """A 2x2-block picture at twice the size: INTER_AREA averages each block, exactly."""
    small = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    big = small.repeat(2, axis=0).repeat(2, axis=1)
    converter = ImageConverter(3, 3, 4)
    assert converter.needs_resize(6, 8) and not converter.needs_resize(3, 4)
    np.testing.assert_array_equal(converter.convert(*fields(big, "rgb8")), chw(small))


@pytest.mark.parametrize("size", [(48, 40), (13, 11), (3, 2)], ids=["downscale", "odd-factor", "upscale"])
def test_resize_is_cv2_inter_area_and_the_same_for_every_colour_order(size):
    big = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
    expected = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)
    converter = ImageConverter(3, H, W)
    np.testing.assert_array_equal(converter.convert(*fields(big, "rgb8", pad=2)), chw(expected))
    np.testing.assert_array_equal(converter.convert(*fields(np.ascontiguousarray(big[..., ::-1]), "bgr8")),
                                  chw(expected))
    rgba = np.concatenate([big, np.zeros((*size, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(converter.convert(*fields(rgba, "rgba8")), chw(expected))
    gray = ImageConverter(1, H, W).convert(*fields(big, "rgb8"))  # colour first, then resize (as in training)
    np.testing.assert_array_equal(gray[0], cv2.resize(gray_bt601(big), (W, H), interpolation=cv2.INTER_AREA))


def test_a_new_incoming_size_is_handled_after_another():
    converter = ImageConverter(3, H, W)
    for size in [(12, 10), (H, W), (30, 25), (12, 10)]:
        big = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
        np.testing.assert_array_equal(converter.convert(*fields(np.ascontiguousarray(big[..., ::-1]), "bgr8")),
                                      chw(cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)))


def test_image_to_chw_returns_a_new_array():
    a = image_to_chw(*fields(RGB, "rgb8"), shape=(3, H, W))
    b = image_to_chw(*fields(RGB, "rgb8"), shape=(3, H, W))
    assert a is not b and not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, chw(RGB))


def _malformed():
    encoding, height, width, step, data = fields(RGB, "rgb8")
    return {
        "short-data": (encoding, height, width, step, data[:-1]),
        "long-data": (encoding, height, width, step, data + b"\0"),
        "step-below-row": (encoding, height, width, width * 3 - 1, data[:(width * 3 - 1) * height]),
        "unknown-encoding": ("yuv422", height, width, step, data),
        "float-encoding": ("32FC1", height, width, step, data),
        "zero-height": (encoding, 0, width, step, b""),
        "zero-width": (encoding, height, 0, 0, b""),
        "negative-step": (encoding, height, width, -step, data),
        "mono16-odd-bytes": ("mono16", 1, 3, 5, b"\0" * 5),
        "not-bytes": (encoding, height, width, step, 12345),
    }


@pytest.mark.parametrize("case", list(_malformed()))
def test_malformed_images_are_rejected(case):
    converter = ImageConverter(3, H, W)
    out = np.full((3, H, W), 7, np.uint8)
    with pytest.raises(MalformedImage):
        converter.convert(*_malformed()[case], out=out)
    assert (out == 7).all()  # nothing written


def test_only_rgb_or_grayscale_policies():
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\)"):
        ImageConverter(4, H, W)
    with pytest.raises(ValueError, match="positive size"):
        ImageConverter(3, 0, W)
    assert set(ENCODINGS) == {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"}


# ---------------------------------------------------------------------- camera frames (layout HWC)
# A camera-layout policy resizes inside its graph: the converter only makes RGB of each encoding.


@pytest.mark.parametrize("encoding, hwc, expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("rgba8", np.concatenate([RGB, ALPHA], axis=2), RGB),
    ("bgra8", np.concatenate([RGB[..., ::-1], ALPHA], axis=2), RGB),
    ("mono8", RGB[..., :1], np.repeat(RGB[..., :1], 3, axis=2)),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_camera_frames_are_rgb_hwc_of_every_encoding_without_resizing(encoding, hwc, expected, pad):
    converter = ImageConverter(3, H, W, layout="HWC")
    assert converter.shape == (H, W, 3) and not converter.needs_resize(12, 10)
    out = converter.convert(*fields(np.ascontiguousarray(hwc), encoding, pad=pad))
    assert out is converter.out and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_camera_frames_of_another_size_are_rejected_untouched():
    converter = ImageConverter(3, H, W, layout="HWC")
    out = np.full((H, W, 3), 7, np.uint8)
    for size in [(2 * H, 2 * W), (W, H), (H, W + 1)]:
        big = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
        with pytest.raises(MalformedImage, match=f"image is {size[1]}x{size[0]}, the policy takes {W}x{H} camera frames"):
            converter.convert(*fields(big, "rgb8"), out=out)
    assert (out == 7).all()
    with pytest.raises(MalformedImage, match="data has"):
        converter.convert(*_malformed()["short-data"], out=out)
    with pytest.raises(ValueError, match="a camera frame 3"):
        ImageConverter(1, H, W, layout="HWC")
    with pytest.raises(ValueError, match="layout must be"):
        ImageConverter(3, H, W, layout="NHWC")
