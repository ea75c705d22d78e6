"""Camera-layout export: image inputs as the camera's uint8 (N, H, W, 3) RGB frames, with the crop,
colour and INTER_AREA resize to the training size inside the graph; metadata, parity against the
OpenCV path, and wrong graphs that the parity check must catch."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from rlcontrol.deploy import runtime
from rlcontrol.deploy.export import (
    PARITY_TOLERANCE,
    CameraInput,
    build_metadata,
    check_parity,
    deployed_module,
    export_run,
    graph_shapes,
    parse_camera_size,
    to_onnx_bytes,
)
from rlcontrol.deploy.metadata import MetadataError, ObservationInput, PolicyMetadata
from rlcontrol.errors import UserError
from rlcontrol.training.evaluate_run import load_policy_agent
from rlcontrol.vision.preprocess import ImagePreprocessing


def _make_run(*args, **kwargs) -> Path:
    """tests/deploy/conftest.py's make_run, for a module-scoped fixture."""
    spec = importlib.util.spec_from_file_location("_deploy_run_factory", Path(__file__).with_name("conftest.py"))
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    return factory.make_run(*args, **kwargs)

SIZE = 32  # the policy's image: (3, 32, 32)
CAMERA = CameraInput((96, 128), crop_top=0.25)  # 72x128 after the crop: a 2.25 x 4 area resize
PREP = ImagePreprocessing(crop_top=0.25, out_size=(SIZE, SIZE))
CONV2D_IMAGE = {"pixels": {"type": "conv2d", "hidden": [8, 8], "kernel": 3, "stride": 2, "features": 16, "join": 1}}
LANE_PIXELS = {"pixels": True, "pixel_size": SIZE, "kwargs": {"include_state": True}}


@pytest.fixture(scope="module")
def camera_export(tmp_path_factory):
    """(run_dir, camera policy.onnx, its summary, the same run's training-size policy.onnx)."""
    root = tmp_path_factory.mktemp("camera_export")
    run_dir = _make_run(root, "td3", "rlc:lane-following", "dict", True, hidden=(32, 32), encoders=CONV2D_IMAGE,
                       env=LANE_PIXELS)
    camera, plain = root / "camera.onnx", root / "plain.onnx"
    summary = export_run(run_dir, camera, parity_samples=200, camera=CAMERA)
    export_run(run_dir, plain, parity_samples=20)
    return run_dir, camera, summary, plain


def test_camera_export_takes_camera_frames_and_matches_opencv(camera_export):
    run_dir, out, summary, plain = camera_export
    parity = summary["parity"]
    assert parity["ok"] and parity["max_abs_diff"] <= PARITY_TOLERANCE and parity["camera_inputs"] == ["pixels"]
    assert summary["inputs"] == {"pixels": [96, 128, 3], "state": [2]}
    assert summary["camera"]["network_inputs"] == {"pixels": [3, SIZE, SIZE]}
    model = onnx.load(out)
    pixels = next(i for i in model.graph.input if i.name == "pixels").type.tensor_type
    assert pixels.elem_type == onnx.TensorProto.UINT8
    assert pixels.shape.dim[0].dim_param and [d.dim_value for d in pixels.shape.dim[1:]] == [96, 128, 3]

    # The camera graph on a frame == the training-size graph on OpenCV's preprocessing of it.
    camera, training = runtime.load(out), runtime.load(plain)
    rng = np.random.default_rng(0)
    for _ in range(5):
        frame = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        state = rng.standard_normal(2).astype(np.float32)
        np.testing.assert_allclose(camera.act({"pixels": frame, "state": state}),
                                   training.act({"pixels": PREP(frame), "state": state}), atol=PARITY_TOLERANCE)
    with pytest.raises(runtime.ObservationError, match=r"a 128x96 camera frame, uint8 height x width x RGB"):
        camera.act({"pixels": PREP(frame), "state": state})
    assert camera.camera_inputs == {"pixels": camera.metadata.observations[0]}


def test_metadata_records_layout_camera_shape_and_preprocessing(camera_export):
    _, out, _, plain = camera_export
    image, state = runtime.load(out).metadata.observations
    assert (image.layout, image.shape, image.camera_shape, image.dtype) == ("HWC", (96, 128, 3), (96, 128, 3), "uint8")
    assert image.preprocessing == PREP.to_dict() and image.network_shape == (3, SIZE, SIZE)
    assert (state.layout, state.camera_shape, state.preprocessing) == ("", (), None)
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    raw = json.loads(props["rlcontrol.observations"])[0]
    assert raw["layout"] == "HWC" and raw["camera_shape"] == [96, 128, 3]
    assert ImagePreprocessing.from_dict(raw["preprocessing"]) == PREP
    assert runtime.load(out).describe()["observations"][0]["preprocessing"]["crop_top"] == 0.25
    (plain_image, _) = runtime.load(plain).metadata.observations
    assert (plain_image.layout, plain_image.shape, plain_image.network_shape) == ("CHW", (3, SIZE, SIZE), (3, SIZE, SIZE))


def _props(observations: list[dict]) -> dict[str, str]:
    meta = PolicyMetadata("td3", "rlc:lane-following", (ObservationInput("x", (1,)),), ("a",), (-1.0,), (1.0,), 0.1,
                          "c", "k", "0")
    return {**meta.to_props(), "rlcontrol.observations": json.dumps(observations)}


def test_old_metadata_reads_as_chw_and_malformed_camera_entries_are_refused():
    # Written before layouts were recorded: images read as CHW, vectors as no layout.
    old = _props([{"name": "pixels", "shape": [3, 8, 8], "dtype": "uint8"}, {"name": "state", "shape": [2]}])
    image, state = PolicyMetadata.from_props(old).observations
    assert (image.layout, image.camera_shape, image.preprocessing, image.network_shape) == ("CHW", (), None, (3, 8, 8))
    assert state.layout == "" and not state.is_camera
    camera = {"name": "pixels", "shape": [48, 64, 3], "dtype": "uint8", "layout": "HWC", "camera_shape": [48, 64, 3],
              "preprocessing": ImagePreprocessing(out_size=(8, 8)).to_dict()}
    (parsed,) = PolicyMetadata.from_props(_props([camera])).observations
    assert parsed.is_camera and parsed.network_shape == (3, 8, 8)
    assert PolicyMetadata.from_props(PolicyMetadata.from_props(_props([camera])).to_props()).observations == (parsed,)
    for bad, message in [({**camera, "layout": "NCHW"}, "layout 'NCHW'"),
                         ({"name": "v", "shape": [4], "layout": "HWC"}, "only uint8 .3-D. images have a layout"),
                         ({**camera, "shape": [3, 48, 64], "camera_shape": [3, 48, 64]}, "must be .H, W, 3."),
                         ({**camera, "camera_shape": [48, 65, 3]}, "camera_shape equal to its shape"),
                         ({**camera, "preprocessing": None}, "needs its preprocessing")]:
        with pytest.raises(MetadataError, match=message):
            PolicyMetadata.from_props(_props([bad]))


class _Wrong(torch.nn.Module):
    """A deliberately wrong camera graph: `how` mangles the frame before the right graph sees it."""

    def __init__(self, module, how: str):
        super().__init__()
        self.module, self.how = module, how

    def forward(self, pixels, state):
        if self.how == "bgr":  # the channels read in BGR order
            pixels = pixels.flip(-1)
        else:  # the HWC bytes read as if they were CHW
            n, height, width, _ = pixels.shape
            pixels = pixels.reshape(n, 3, height, width).permute(0, 2, 3, 1)
        return self.module(pixels, state)


@pytest.mark.parametrize("how", ["bgr", "chw-bytes"])
def test_parity_catches_a_wrong_channel_order_or_layout(camera_export, tmp_path, how):
    run_dir, _, _, _ = camera_export
    config, env, agent = load_policy_agent(run_dir)
    meta = build_metadata(config, env.spec, "0" * 64, camera=CAMERA)
    path = tmp_path / f"{how}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warning about reading a shape
        path.write_bytes(to_onnx_bytes(_Wrong(deployed_module(agent, env.spec, meta), how), graph_shapes(meta), meta))
    parity = check_parity(agent, env, path, samples=50)
    env.close()
    assert not parity["ok"] and parity["max_abs_diff_random"] > 100 * PARITY_TOLERANCE, parity
    assert parity["max_abs_diff_recorded"] > 10 * PARITY_TOLERANCE, parity


def test_camera_settings_that_cannot_work_are_refused(camera_export):
    run_dir, _, _, _ = camera_export
    config, env, _ = load_policy_agent(run_dir)
    env.close()
    for camera, message in [(CameraInput((96, 128), crop_top=0.6, crop_bottom=0.5), "leaves nothing"),
                            (CameraInput((48, 64), crop_top=0.5), "the cropped frame is 24x64, smaller than"),
                            (CameraInput((96, 128), crop_left=1.0), r"crop_left is a fraction")]:
        with pytest.raises(UserError, match=message):
            build_metadata(config, env.spec, "0" * 64, camera=camera)
    gray = CameraInput((96, 128), crop_bottom=0.1).preprocessing("pixels", (1, 24, 24))
    assert gray.grayscale and gray.out_size == (24, 24) and gray.crop_bottom == 0.1
    with pytest.raises(UserError, match="4 channels"):
        CameraInput((96, 128)).preprocessing("pixels", (4, 24, 24))
    assert parse_camera_size("480x640") == (480, 640) and parse_camera_size(" 96 X 128 ") == (96, 128)
    for bad in ("480", "480x", "ax640", "0x640", "480x640x3", "-1x5"):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH|positive"):
            parse_camera_size(bad)


def test_vector_policies_have_no_camera_input(make_run_dir):
    config, env, _ = load_policy_agent(make_run_dir())
    env.close()
    with pytest.raises(UserError, match="no image input"):
        build_metadata(config, env.spec, "0" * 64, camera=CAMERA)
