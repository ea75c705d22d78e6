"""sensor_msgs/Image -> the uint8 array an image policy takes, with numpy and OpenCV: (C, H, W) at
the training size, or (H, W, 3) RGB camera frames for a camera-layout export.

No ROS import (and no cv_bridge): the converter works on the message's fields, so it is
unit-tested without a ROS graph and the policy node calls it with `msg.encoding, msg.height, ...`.

    converter = ImageConverter(channels=3, height=64, width=64)
    chw = converter.convert(encoding, height, width, step, data, is_bigendian)   # preallocated output

Pipeline, the same order as training's `rlcontrol.vision.preprocess` (colour, then resize):
  1. validate: known encoding, non-zero size, `step >= width * bytes per pixel` (rows may be
     padded), `len(data) == step * height`; anything else raises MalformedImage;
  2. view the rows without their padding (no copy), mono16 scaled to 8 bits (round(v / 257),
     as cv_bridge scales 16 -> 8 bits; `is_bigendian` only matters here);
  3. colour: to RGB (C == 3) or to grayscale (C == 1, OpenCV's BT.601 weights
     0.299 R + 0.587 G + 0.114 B, what `cv2.COLOR_RGB2GRAY` and the training pipeline use);
  4. resize to (H, W) with cv2.INTER_AREA when the size differs;
  5. HWC -> CHW into the output buffer.
A camera-layout policy (`rlcontrol export --camera-size`, metadata layout "HWC") crops and resizes
inside its graph: `ImageConverter(3, H, W, layout="HWC")` does steps 1-3 only (to RGB), refuses an
image of any other size than H x W with MalformedImage, and writes uint8 (H, W, 3).
Every intermediate buffer is kept and reused while the incoming size stays the same (a camera
does not change its resolution), so steady-state conversion allocates only small array views.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

__all__ = ["ENCODINGS", "ImageConverter", "MalformedImage", "image_to_chw"]


@dataclasses.dataclass(frozen=True)
class Encoding:
    channels: int  # values per pixel in the message
    bytes_per_channel: int
    to_rgb: int | None  # cv2.cvtColor code to RGB; None: already RGB
    to_gray: int | None  # cv2.cvtColor code to grayscale; None: already gray


ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, 1, None, cv2.COLOR_RGB2GRAY),
    "bgr8": Encoding(3, 1, cv2.COLOR_BGR2RGB, cv2.COLOR_BGR2GRAY),
    "rgba8": Encoding(4, 1, cv2.COLOR_RGBA2RGB, cv2.COLOR_RGBA2GRAY),
    "bgra8": Encoding(4, 1, cv2.COLOR_BGRA2RGB, cv2.COLOR_BGRA2GRAY),
    "mono8": Encoding(1, 1, cv2.COLOR_GRAY2RGB, None),
    "mono16": Encoding(1, 2, cv2.COLOR_GRAY2RGB, None),
}
OUTPUT_CHANNELS = (1, 3)  # grayscale or RGB policies


class MalformedImage(ValueError):
    """An image message that cannot be converted (never used, only counted)."""


class _Buffers:
    """Scratch arrays by shape, kept while the shape repeats: one camera, one size."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
        array = self._arrays.get(key)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[key] = np.empty(shape, dtype=dtype)
        return array


class ImageConverter:
    """Converts image messages to one policy input of shape (channels, height, width), uint8."""

    def __init__(self, channels: int, height: int, width: int, layout: str = "CHW") -> None:
        if layout not in ("CHW", "HWC"):
            raise ValueError(f"layout must be 'CHW' or 'HWC', got {layout!r}")
        if channels not in OUTPUT_CHANNELS or (layout == "HWC" and channels != 3):
            raise ValueError(f"an image input needs 1 (grayscale) or 3 (RGB) channels, a camera frame 3; got {channels}")
        if height < 1 or width < 1:
            raise ValueError(f"an image input needs a positive size, got {height}x{width}")
        self.layout = layout
        self.size = (int(height), int(width))
        self.shape = (int(channels), *self.size) if layout == "CHW" else (*self.size, 3)
        self.out = np.zeros(self.shape, dtype=np.uint8)
        self._buffers = _Buffers()

    @property
    def channels(self) -> int:
        return self.shape[0] if self.layout == "CHW" else 3

    def needs_resize(self, height: int, width: int) -> bool:
        """CHW: images of another size are resized here. HWC: never (they are refused)."""
        return self.layout == "CHW" and (height, width) != self.size

    def convert(self, encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False,
                out: np.ndarray | None = None) -> np.ndarray:
        """The image as uint8 (C, H, W), or (H, W, 3) RGB for layout HWC, in `out` (default: this
        converter's own buffer, which the next call overwrites); raises MalformedImage for a message
        that does not describe an image (or, for HWC, not one of the camera's size)."""
        out = self.out if out is None else out
        if out.shape != self.shape or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 {self.shape}, got {out.dtype} {out.shape}")
        enc = ENCODINGS.get(encoding)
        if enc is None:
            raise MalformedImage(f"unsupported encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
        if self.layout == "HWC" and (int(height), int(width)) != self.size:
            raise MalformedImage(f"image is {int(width)}x{int(height)}, the policy takes {self.size[1]}x{self.size[0]} "
                                 "camera frames (its graph crops and resizes them, for that size only)")
        pixels = self._pixels(enc, int(height), int(width), int(step), data, bool(is_bigendian))
        colour = self._colour(enc, pixels)
        if self.layout == "HWC":
            np.copyto(out, colour)
            return out
        sized = self._resize(colour)
        if self.channels == 3:
            np.copyto(out, sized.transpose(2, 0, 1))
        else:
            np.copyto(out[0], sized)
        return out

    # ------------------------------------------------------------------ steps

    def _pixels(self, enc: Encoding, height: int, width: int, step: int, data, big_endian: bool) -> np.ndarray:
        """(h, w) or (h, w, channels) uint8 view of the rows without padding (mono16: scaled copy)."""
        if height <= 0 or width <= 0:
            raise MalformedImage(f"empty image ({width}x{height})")
        row = width * enc.channels * enc.bytes_per_channel
        if step < row:
            raise MalformedImage(f"step {step} is shorter than a row of {width} pixels ({row} bytes)")
        try:
            raw = np.frombuffer(data, dtype=np.uint8)
        except (TypeError, ValueError) as exc:  # not a buffer of bytes
            raise MalformedImage(f"image data is not a byte buffer: {exc}") from None
        if raw.size != step * height:
            raise MalformedImage(f"data has {raw.size} bytes, step * height is {step * height}")
        rows = raw.reshape(height, step)[:, :row]
        if enc.bytes_per_channel == 2:
            return self._mono16_to_8(rows, height, width, big_endian)
        return rows if enc.channels == 1 else rows.reshape(height, width, enc.channels)

    def _mono16_to_8(self, rows: np.ndarray, height: int, width: int, big_endian: bool) -> np.ndarray:
        # numpy handles the byte order and any (odd) row stride; OpenCV wants native, aligned values.
        native = self._buffers.get("mono16", (height, width), np.uint16)
        np.copyto(native, rows.view(">u2" if big_endian else "<u2"))
        return cv2.convertScaleAbs(native, dst=self._buffers.get("mono8", (height, width)), alpha=1.0 / 257.0)

    def _colour(self, enc: Encoding, pixels: np.ndarray) -> np.ndarray:
        """RGB (h, w, 3) or gray (h, w): the view itself when the encoding already matches."""
        code = enc.to_rgb if self.channels == 3 else enc.to_gray
        if code is None:
            return pixels
        shape = pixels.shape[:2] + ((3,) if self.channels == 3 else ())
        return cv2.cvtColor(pixels, code, dst=self._buffers.get("colour", shape))

    def _resize(self, colour: np.ndarray) -> np.ndarray:
        height, width = self.size
        if colour.shape[:2] == (height, width):
            return colour
        shape = (height, width) + colour.shape[2:]
        return cv2.resize(colour, (width, height), dst=self._buffers.get("resized", shape),
                          interpolation=cv2.INTER_AREA)


def image_to_chw(encoding: str, height: int, width: int, step: int, data, shape: tuple[int, int, int],
                 is_bigendian: bool = False) -> np.ndarray:
    """One-off conversion to a new uint8 array of `shape` (C, H, W); see ImageConverter."""
    return ImageConverter(*shape).convert(encoding, height, width, step, data, is_bigendian).copy()
