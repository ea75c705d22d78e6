"""Camera-frame preprocessing in one place, for training and deployment alike.

`ImagePreprocessing` is a frozen, JSON-able config whose `__call__` turns one RGB frame,
uint8 (H, W, 3), into the network's input, uint8 (C, H', W'):

    crop (drop rows/columns at the edges: sky, bonnet) -> colour (RGB or grayscale)
    -> resize to `out_size` with cv2.INTER_AREA (skipped when the size already matches)

`augment` adds training-only randomness (brightness, contrast, small shifts) drawn from a
`np.random.Generator`; deployment never calls it.

`TorchPreprocess` is the same deterministic pipeline as a torch module built only from
ONNX-friendly ops (slicing, Gather, Mul, Add, MatMul, Floor, Round, Clip, Cast), so an
exported graph can take the raw camera frame. It reproduces OpenCV by construction rather
than by approximation:

* grayscale uses OpenCV's own 15-bit fixed-point weights (9798, 19235, 3735) / 32768 for
  0.299 / 0.587 / 0.114 with round-half-up, computed on integer-valued float32 (every
  partial sum stays below 2**24, so it is exact): identical to cv2.cvtColor;
* INTER_AREA downscaling follows whichever of cv2.resize's three uint8 code paths the sizes
  select (`area_path`), in the same float32 arithmetic:
  - "2x2" (both factors exactly 2): integer sums, (sum + 2) >> 2;
  - "integer" (both factors whole numbers): integer sums times float32(1 / area), rounded
    half to even;
  - "area" (any other shrink): per output pixel, the float32 sum of input * weight over the
    columns in ascending order, then the same over the rows, rounded half to even, with the
    weights measured from cv2.resize itself (`resize_weights`). Each product and each sum is
    rounded to float32 exactly as OpenCV's loop rounds it, so results agree even where the
    true average is a tie (x.5): a single matrix product (what this module did before)
    rounds those differently in ~0.3% of pixels for 480x640 -> 64x64.
  Downscaling and crop-only therefore match cv2 bit for bit in our tests (random frames,
  1 and 3 channels, all three paths).
  Upscaling cannot match bit for bit: for uint8 cv2 switches to bilinear interpolation with
  11-bit fixed-point coefficients, whose rounding differs from float32 by at most one grey
  level. That case is `rows @ image @ cols.T` with the measured weights; tests bound the
  difference: max <= 1 grey level, mean < 0.15.
`F.interpolate(mode="area")` would be simpler but equals INTER_AREA only for integer
factors (it is adaptive average pooling), and ONNX cannot express it for others.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

__all__ = ["ImagePreprocessing", "TorchPreprocess", "area_path", "resize_weights", "torch_preprocess"]

CROP_UNITS = ("fraction", "pixels")
# OpenCV's RGB->gray fixed point (color_rgb.simd.hpp): weights sum to 2**15; +2**14 rounds.
_GRAY_WEIGHTS = (9798.0, 19235.0, 3735.0)
_GRAY_SHIFT = 32768.0
_CV2_MAX_CHANNELS = 4  # cv2.resize handles at most 4 channels of float64
_DBL_EPSILON = float(np.finfo(np.float64).eps)


def _check_image(image: Any, layout: str) -> np.ndarray:
    """One clear message for anything that is not a uint8 RGB frame in `layout`."""
    expected = {"HWC": "uint8 (H, W, 3) RGB", "CHW": "uint8 (C, H, W) or (N, C, H, W)"}[layout]
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array {expected}, got {type(image).__name__}")
    ok_shape = (image.ndim == 3 and image.shape[2] == 3) if layout == "HWC" else image.ndim in (3, 4)
    if image.dtype != np.uint8 or not ok_shape or image.size == 0:
        raise ValueError(f"image must be {expected}, got {image.dtype} {tuple(image.shape)}")
    return image


@dataclass(frozen=True)
class ImagePreprocessing:
    """Crop, colour and resize settings (deterministic) plus training-only augmentation.

    Crops say how much to drop at each edge: with crop_units="fraction" a fraction of the
    input's height/width (rounded to whole pixels, half up), with "pixels" whole pixels.
    out_size is (height, width) or one int for a square; None keeps the cropped size.
    Augmentation (all off by default): brightness adds a uniform offset in
    [-brightness, brightness] * 255; contrast scales about the image mean by a factor in
    [1 - contrast, 1 + contrast]; shift translates by up to `shift` pixels in each
    direction, filling with the edge pixels (DrQ-style replicate-pad-and-crop).
    """

    crop_top: float = 0.0
    crop_bottom: float = 0.0
    crop_left: float = 0.0
    crop_right: float = 0.0
    crop_units: str = "fraction"
    out_size: tuple[int, int] | None = None
    grayscale: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    shift: int = 0

    def __post_init__(self) -> None:
        if self.crop_units not in CROP_UNITS:
            raise ValueError(f"crop_units must be one of {CROP_UNITS}, got {self.crop_units!r}")
        for name in ("crop_top", "crop_bottom", "crop_left", "crop_right"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if self.crop_units == "fraction" and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} is a fraction of the image and must be in [0, 1), got {value}")
            if self.crop_units == "pixels" and (value < 0 or value != int(value)):
                raise ValueError(f"{name} is in pixels and must be a whole number >= 0, got {value}")
            object.__setattr__(self, name, float(value) if self.crop_units == "fraction" else int(value))
        if self.out_size is not None:
            size = (self.out_size, self.out_size) if isinstance(self.out_size, int) else tuple(self.out_size)
            if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
                raise ValueError(f"out_size must be None, a positive int or (height, width), got {self.out_size!r}")
            object.__setattr__(self, "out_size", size)
        if not isinstance(self.grayscale, bool):
            raise ValueError(f"grayscale must be true or false, got {self.grayscale!r}")
        for name, high in (("brightness", 1.0), ("contrast", 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= high:
                raise ValueError(f"{name} must be in [0, {high}], got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise ValueError(f"shift must be a whole number of pixels >= 0, got {self.shift!r}")

    # ----------------------------------------------------------------- geometry
    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def augments(self) -> bool:
        """True if `augment` changes anything (any augmentation amount is non-zero)."""
        return self.brightness > 0 or self.contrast > 0 or self.shift > 0

    def crop_box(self, input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the rows y0:y1 and columns x0:x1 kept of an (H, W) input."""
        height, width = (int(d) for d in input_hw)
        if self.crop_units == "fraction":
            top, bottom = (int(np.floor(f * height + 0.5)) for f in (self.crop_top, self.crop_bottom))
            left, right = (int(np.floor(f * width + 0.5)) for f in (self.crop_left, self.crop_right))
        else:
            top, bottom, left, right = (int(v) for v in (self.crop_top, self.crop_bottom, self.crop_left, self.crop_right))
        if top + bottom >= height or left + right >= width:
            raise ValueError(
                f"crop (top {top}, bottom {bottom}, left {left}, right {right} pixels) leaves nothing "
                f"of a {height}x{width} image"
            )
        return top, height - bottom, left, width - right

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int, int]:
        """(C, H', W') of the result for an input frame of height/width `input_hw`."""
        y0, y1, x0, x1 = self.crop_box(input_hw)
        height, width = self.out_size if self.out_size is not None else (y1 - y0, x1 - x0)
        return self.channels, height, width

    # ------------------------------------------------------------ deterministic
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> uint8 (C, H', W') contiguous (C = 1 if grayscale else 3)."""
        image = _check_image(image, "HWC")
        y0, y1, x0, x1 = self.crop_box(image.shape[:2])
        out = np.ascontiguousarray(image[y0:y1, x0:x1])
        # Colour before resize: one channel is cheaper to resize, and TorchPreprocess does
        # the same order so that both round at the same points.
        if self.grayscale:
            out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[:, :, None]
        if self.out_size is not None and out.shape[:2] != self.out_size:
            height, width = self.out_size
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, -1)
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def process_chw(self, frame: np.ndarray) -> np.ndarray:
        """Same as `__call__` for a channel-first uint8 (3, H, W) frame (what envs' pixel
        observations hold) -> uint8 (C, H', W')."""
        frame = _check_image(frame, "CHW")
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"frame must be uint8 (3, H, W) RGB, got {frame.dtype} {tuple(frame.shape)}")
        return self(frame.transpose(1, 2, 0))

    # ------------------------------------------------------------ augmentation
    def augment(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Training-only random brightness/contrast/shift of uint8 (C, H, W) or (N, C, H, W)
        (each image of a batch gets its own draw) -> uint8, same shape, a new array.

        The identity (a copy, and no draws from `rng`) when all amounts are zero.
        """
        image = _check_image(image, "CHW")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if not self.augments:
            return image.copy()
        if image.ndim == 4:
            return np.stack([self._augment_one(one, rng) for one in image])
        return self._augment_one(image, rng)

    def _augment_one(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Always draw the same four numbers so a stream's later draws do not depend on
        # which augmentations are enabled.
        offset = rng.uniform(-self.brightness, self.brightness) * 255.0
        gain = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)
        dy, dx = (int(d) for d in rng.integers(-self.shift, self.shift + 1, size=2))
        out = image
        if self.shift > 0:
            s, (_, height, width) = self.shift, image.shape
            padded = np.pad(image, ((0, 0), (s, s), (s, s)), mode="edge")
            out = padded[:, s + dy:s + dy + height, s + dx:s + dx + width]
        values = out.astype(np.float32)
        values = (values - values.mean()) * gain + values.mean() + offset
        return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (out_size as a list); `from_dict` inverts it."""
        data = dataclasses.asdict(self)
        if self.out_size is not None:
            data["out_size"] = list(self.out_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePreprocessing:
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; known: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("out_size"), list):
            data["out_size"] = tuple(data["out_size"])
        return cls(**data)

    def torch_module(self, input_hw: tuple[int, int], *, as_float: bool = False,
                     layout: str = "NCHW") -> TorchPreprocess:
        """The deterministic part as a torch module for frames of size `input_hw`, taken as
        uint8 (N, 3, H, W) or, with layout="NHWC", (N, H, W, 3) as a camera delivers them."""
        return TorchPreprocess(self, input_hw, as_float=as_float, layout=layout)


@functools.lru_cache(maxsize=64)
def resize_weights(input_hw: tuple[int, int], output_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Matrices (rows (H', H), cols (W', W)) float64 with cv2.resize(x, INTER_AREA) ==
    rows @ x @ cols.T for float x (H, W), measured from cv2 itself.

    Each axis is probed with unit images that are one (or two) pixels wide in the other
    axis: cv2 picks true area averaging only when *both* axes shrink (or keep) and
    bilinear-style weights otherwise, so the probe's other axis copies whether the real
    other axis is upscaled; the per-axis weights do not otherwise depend on it.
    """
    (height, width), (out_h, out_w) = input_hw, output_hw

    def axis(n_in: int, n_out: int, other_in: int, other_out: int) -> np.ndarray:
        probe_in, probe_out = (1, 2) if other_out > other_in else (1, 1)
        columns = []
        for start in range(0, n_in, _CV2_MAX_CHANNELS):
            k = min(_CV2_MAX_CHANNELS, n_in - start)
            units = np.zeros((n_in, probe_in, k))
            units[start + np.arange(k), :, np.arange(k)] = 1.0
            resized = cv2.resize(units, (probe_out, n_out), interpolation=cv2.INTER_AREA)
            columns.append(resized.reshape(n_out, probe_out, k)[:, 0, :])
        return np.concatenate(columns, axis=1)

    rows = axis(height, out_h, width, out_w)
    cols = axis(width, out_w, height, out_h)
    for matrix in (rows, cols):
        matrix.setflags(write=False)  # cached: shared by every caller
    return rows, cols


def area_path(input_hw: tuple[int, int], output_hw: tuple[int, int]) -> str:
    """Which cv2.resize(INTER_AREA) code path a uint8 image of `input_hw` -> `output_hw` takes:
    "copy" (same size), "2x2", "integer" (whole-number factors), "area" (other shrinks) or
    "upscale" (either axis grows). Decided as cv::resize decides it, in float64."""
    (height, width), (out_h, out_w) = (tuple(int(d) for d in hw) for hw in (input_hw, output_hw))
    if (height, width) == (out_h, out_w):
        return "copy"
    scale_x, scale_y = 1.0 / (out_w / width), 1.0 / (out_h / height)
    if scale_x < 1 or scale_y < 1:
        return "upscale"
    if abs(scale_x - round(scale_x)) < _DBL_EPSILON and abs(scale_y - round(scale_y)) < _DBL_EPSILON:
        return "2x2" if round(scale_x) == round(scale_y) == 2 else "integer"
    return "area"


def _taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight), each (taps, out): for each output, its inputs in ascending order with
    their weights; outputs with fewer inputs are padded with weight 0 (adding 0.0 is exact)."""
    count = max(int(np.count_nonzero(row)) for row in weights)
    index = np.zeros((count, weights.shape[0]), dtype=np.int64)
    value = np.zeros((count, weights.shape[0]), dtype=np.float32)
    for out, row in enumerate(weights):
        inputs = np.flatnonzero(row)
        index[:len(inputs), out], value[:len(inputs), out] = inputs, row[inputs]
        index[len(inputs):, out] = inputs[-1]
    return index, value


class TorchPreprocess(nn.Module):
    """The deterministic part of `ImagePreprocessing` in torch, exportable to ONNX.

    forward: uint8 (N, 3, H, W) RGB with (H, W) == input_hw, or (N, H, W, 3) with
    layout="NHWC" (a camera's own layout; rearranged inside, see `_tap_sums`) -> uint8
    (N, C, H', W'), or float32 in [0, 1] (the same grey levels / 255) if as_float. Agrees
    with the OpenCV path as stated in the module docstring.
    """

    def __init__(self, preprocessing: ImagePreprocessing, input_hw: tuple[int, int], *, as_float: bool = False,
                 layout: str = "NCHW"):
        super().__init__()
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        self.layout = layout
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.box = preprocessing.crop_box(self.input_hw)
        self.grayscale = preprocessing.grayscale
        self.as_float = as_float
        self.output_shape = preprocessing.output_shape(self.input_hw)
        y0, y1, x0, x1 = self.box
        self.cropped_hw = (y1 - y0, x1 - x0)
        self.cropped = self.cropped_hw != self.input_hw
        out_hw = self.output_shape[1:]
        self.path = area_path(self.cropped_hw, out_hw) if preprocessing.out_size is not None else "copy"
        self.register_buffer("gray_weights", torch.tensor(_GRAY_WEIGHTS, dtype=torch.float32))
        self._taps = {"col": 0, "row": 0}
        if self.path == "copy":
            return
        rows, cols = resize_weights(self.cropped_hw, out_hw)
        if self.path == "upscale":
            self.register_buffer("rows", torch.tensor(rows, dtype=torch.float32))  # (H', h)
            self.register_buffer("cols_t", torch.tensor(cols.T, dtype=torch.float32))  # (w, W')
            return
        if self.path in ("2x2", "integer"):  # plain block sums (exact integers), scaled at the end
            area = int(np.count_nonzero(rows[0])) * int(np.count_nonzero(cols[0]))
            rows, cols = (rows > 0).astype(np.float64), (cols > 0).astype(np.float64)
            self.register_buffer("area_scale", torch.tensor(1.0 / area, dtype=torch.float32))
        for axis, weights in (("col", cols), ("row", rows)):
            index, value = _taps(weights)
            self._taps[axis] = len(index)
            for k in range(len(index)):
                self.register_buffer(f"{axis}_index{k}", torch.from_numpy(index[k]))
                self.register_buffer(f"{axis}_weight{k}", torch.from_numpy(value[k]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = self.layout == "NHWC"
        # Checked eagerly only: under ONNX tracing the shapes are static constants anyway.
        expected = (*self.input_hw, 3) if nhwc else (3, *self.input_hw)
        if not torch.jit.is_tracing() and (x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != expected):
            raise ValueError(f"expected uint8 (N, {', '.join(map(str, expected))}) RGB frames, "
                             f"got {x.dtype} {tuple(x.shape)}")
        y0, y1, x0, x1 = self.box
        if self.cropped:
            x = x[:, y0:y1, x0:x1] if nhwc else x[:, :, y0:y1, x0:x1]
        if self.path in ("copy", "upscale"):
            out = self._gray((x.permute(0, 3, 1, 2) if nhwc else x).to(torch.float32), 1)
            if self.path == "upscale":
                out = torch.floor(torch.matmul(torch.matmul(self.rows, out), self.cols_t) + 0.5)
        else:
            sums = self._tap_sums(x)
            if self.path == "2x2":  # cv2: (a + b + c + d + 2) >> 2
                out = torch.floor((sums + 2.0) * 0.25)
            elif self.path == "integer":  # cv2: saturate_cast<uchar>(sum * (1.f / area))
                out = torch.round(sums * self.area_scale)
            else:  # cv2: saturate_cast<uchar>(float sum)
                out = torch.round(sums)
        if self.path != "copy":
            out = torch.clamp(out, 0.0, 255.0)
        return out * (1.0 / 255.0) if self.as_float else out.to(torch.uint8)

    def _gray(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Integer-valued float32 RGB along `dim` -> OpenCV's grayscale (kept there, size 1);
        unchanged if the output is RGB."""
        if not self.grayscale:
            return x
        shape = [1] * x.dim()
        shape[dim] = 3
        weighted = (x * self.gray_weights.view(shape)).sum(dim=dim, keepdim=True)
        return torch.floor((weighted + _GRAY_SHIFT / 2) / _GRAY_SHIFT)

    def _tap_sums(self, crop: torch.Tensor) -> torch.Tensor:
        """cv2's INTER_AREA loops on the uint8 crop -> float32 (N, C, H', W') before rounding:
        columns, then rows, each a float32 running sum of input * weight in ascending input
        order (with the 0/1 weights of the integer paths, exact integer sums).

        The axis being summed over is moved to the front, so that each tap gathers whole
        contiguous blocks, and always as the innermost axis moving outwards, on the uint8
        frame before the cast: onnxruntime has a fast kernel for that move (~0.1 ms for a
        480x640 frame) but takes ~2 ms for other transposes of the frame and ~3 ms for a
        Gather along the last axis."""
        h, w = self.cropped_hw
        if self.layout == "NHWC":  # (N, h, w, C) -> (N h, w C) -> (w C, N h) = (w, C, N, h)
            by_column = crop.reshape(-1, w * 3).t().reshape(w, 3, -1, h)
            channel_dim, to_nchw = 1, (3, 2, 0, 1)  # the rows pass ends in (H', W', C, N)
        else:  # (N, C, h, w) -> (w, N, C, h)
            by_column = crop.permute(3, 0, 1, 2)
            channel_dim, to_nchw = 2, (2, 3, 0, 1)  # the rows pass ends in (H', W', N, C)
        cols = self._sum_taps("col", self._gray(by_column.to(torch.float32), channel_dim))
        rows = self._sum_taps("row", cols.permute(3, 0, 1, 2))  # h (innermost) to the front
        return rows.permute(*to_nchw)

    def _sum_taps(self, axis: str, x: torch.Tensor) -> torch.Tensor:
        """sum_k x[index_k] * weight_k along dim 0, accumulated in order k = 0, 1, ..."""
        total = None
        for k in range(self._taps[axis]):
            weight = getattr(self, f"{axis}_weight{k}").view(-1, 1, 1, 1)
            term = torch.index_select(x, 0, getattr(self, f"{axis}_index{k}")) * weight
            total = term if total is None else total + term
        return total


@functools.lru_cache(maxsize=16)
def _cached_module(preprocessing: ImagePreprocessing, input_hw: tuple[int, int]) -> TorchPreprocess:
    return TorchPreprocess(preprocessing, input_hw)


def torch_preprocess(x: torch.Tensor, preprocessing: ImagePreprocessing) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB -> uint8 (N, C, H', W'): `preprocessing`'s crop, colour and
    resize in torch (a cached `TorchPreprocess` per input size). Use `torch_module` to put
    the step inside an exported graph."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"expected a uint8 tensor (N, 3, H, W), got {shape}")
    with torch.no_grad():
        return _cached_module(preprocessing, (int(x.shape[2]), int(x.shape[3])))(x)
