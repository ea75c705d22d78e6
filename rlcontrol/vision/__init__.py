"""Image pipeline and VAE pretraining for pixel-based agents ("Learning to Drive in a Day").

* `preprocess`: `ImagePreprocessing` (crop, colour, INTER_AREA resize, training-only
  augmentation) and `TorchPreprocess`, its ONNX-exportable torch twin.
* `vae`: `VAEConfig`, `VAE` / `VAEEncoder` / `VAEDecoder`, `vae_loss`, safetensors save/load.
* `pretrain`: random-episode frame collection, training, reconstruction grid and the
  `pretrain-vae` command (`python -m rlcontrol.vision.pretrain`; flags in `pretrain_cli`).
"""

import importlib

# Names -> the submodule defining them. Imported on first use (module __getattr__), so that
# `rlcontrol.vision.pretrain_cli`, which the command line imports, pulls in no torch or OpenCV.
_EXPORTS = {
    "ImagePreprocessing": "preprocess", "TorchPreprocess": "preprocess", "torch_preprocess": "preprocess",
    **{name: "vae" for name in ("VAE", "VAEConfig", "VAEDecoder", "VAEEncoder", "VAEFileError", "load_encoder",
                                "load_vae", "read_vae_metadata", "save_vae", "vae_loss")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"rlcontrol.vision.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rlcontrol.vision' has no attribute {name!r}")
