"""``torchvision:<name>`` workloads: any torchvision classification model with your image data.

Weights are never downloaded at run time. ``weights`` is one of:

* ``"none"``: random initialization (to try things out: latency and size are real, accuracy
  is not, unless you fine-tune with ``finetune_epochs``);
* a torchvision weights name (``"IMAGENET1K_V1"``, ``"DEFAULT"``): used only if its file is
  already in the local torch cache (``torch.hub.get_dir()/checkpoints``); otherwise the error
  says which file to put where;
* a path to a state dict saved with ``torch.save(model.state_dict(), path)``.

``data`` is ``"digits"`` (scikit-learn's bundled digits, resized to ``image_size`` and made
3-channel) or ``"imagefolder:PATH"`` (``PATH`` with ``train/``, ``val/`` and ``test/``
sub-folders of class folders, or one folder of class folders split by ``split``) or
``"images:PATH"`` (image files under ``PATH``, no labels, split by ``split``: what a user of a
pretrained model has; candidates are then scored by top-1 agreement with the original model,
and the model keeps its own classes).

Example:
    >>> from autoshrink.workloads import load
    >>> wl = load("torchvision:resnet18", weights="none", data="digits", image_size=32)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from autoshrink.config import ConfigError
from autoshrink.workloads.base import Workload
from autoshrink.workloads.training import cached_finetune, finetune_key

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORMER_FAMILIES = ("vit_", "swin_", "maxvit_")


def torchvision_workload(
    name: str,
    *,
    weights: str | None = "none",
    num_classes: int | None = None,
    data: str | None = None,
    image_size: int | None = None,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    finetune_epochs: int = 0,
    seed: int = 0,
    verbose: bool = True,
) -> Workload:
    """A torchvision classifier and image data, ready to search (see the module doc).

    Args:
        name: a model name from ``torchvision.models.list_models()``, e.g. ``"resnet18"``.
        weights: ``"none"``, a torchvision weights name, or a state-dict path.
        num_classes: resize the classification head (taken from the data when omitted).
        data: ``"digits"`` or ``"imagefolder:PATH"`` (required).
        image_size: input height and width (default: the weights' crop size, else 224).
        split: train/val/test fractions for a single image folder (seeded by ``seed``).
        finetune_epochs: train the whole model on the train split first (cached on disk),
            so that accuracy means something for random or re-headed weights.
    """
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=6, cutoff=0.6)
        raise ConfigError(
            f"torchvision has no classification model {name!r}"
            + (f"; did you mean one of {close}?" if close else "; see torchvision.models.list_models()")
        )
    if data is None:
        raise ConfigError(f"torchvision:{name} needs data: --data digits or --data imagefolder:PATH")
    tv_weights = _torchvision_weights(name, weights)
    size = image_size or _crop_size(tv_weights) or 224
    train, val, test, classes = image_data(data, image_size=size, split=split, seed=seed)
    num_classes = num_classes or classes
    if num_classes is None and tv_weights is None:
        raise ConfigError(f"torchvision:{name} with unlabelled images needs pretrained weights (or --num-classes)")
    model = _build(name, weights, tv_weights, num_classes, size)
    example = _first_input(val)
    if finetune_epochs:
        key = finetune_key(name, weights, data, size, num_classes, finetune_epochs, seed, len(train))  # type: ignore[arg-type]
        model = cached_finetune(model, train, val, epochs=finetune_epochs, key=key, seed=seed, verbose=verbose)
    family = "transformer" if name.startswith(TRANSFORMER_FAMILIES) else "cnn"
    return Workload(
        name=f"torchvision:{name}",
        model=model.eval(),
        train=train,
        val=val,
        test=test,
        example_input=example,
        family=family,
    )


def _torchvision_weights(name: str, weights: str | None) -> Any:
    """The torchvision weights enum member ``weights`` names, or None for none / a path."""
    import torchvision

    if weights is None or weights.lower() == "none" or Path(weights).suffix in (".pt", ".pth", ".bin"):
        return None
    try:
        return torchvision.models.get_model_weights(name)[weights]
    except KeyError:
        names = [w.name for w in torchvision.models.get_model_weights(name)]
        raise ConfigError(
            f"{name} has no weights {weights!r}; use one of {names + ['DEFAULT']}, 'none', or a state-dict path"
        ) from None


def _crop_size(tv_weights: Any) -> int | None:
    if tv_weights is None:
        return None
    crop = getattr(tv_weights.transforms(), "crop_size", None)
    return int(crop[0]) if crop else None


def _cached_weight_file(tv_weights: Any) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(tv_weights.url)


def _build(name: str, weights: str | None, tv_weights: Any, num_classes: int | None, size: int) -> nn.Module:
    import torchvision

    if tv_weights is not None:
        path = _cached_weight_file(tv_weights)
        if not path.is_file():
            raise ConfigError(
                f"weights {weights} for {name} are not in the local torch cache, and autoshrink never "
                f"downloads at run time: put {path.name} in {path.parent} (from {tv_weights.url}), "
                "or pass --weights none / a state-dict path"
            )
        model = torchvision.models.get_model(name, weights=tv_weights)
        if num_classes is not None:
            _resize_head(model, num_classes, size)
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random weights are the same in every run (resume, run files)
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if weights is not None and weights.lower() != "none":
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"cannot load {path} into {name} with {num_classes} classes: {str(exc)[:400]}") from None
    return model


def _resize_head(model: nn.Module, num_classes: int, size: int) -> None:
    """Replace the final Linear by one with ``num_classes`` outputs (untrained: fine-tune it)."""
    from autoshrink.techniques import output_layers

    model.eval()
    heads = [m for m in output_layers(model, torch.zeros(1, 3, size, size)) if isinstance(m, nn.Linear)]
    if not heads:
        raise ConfigError("cannot find the classification head (a final nn.Linear) to resize")
    head = heads[0]
    if head.out_features == num_classes:
        return
    name = next(n for n, m in model.named_modules() if m is head)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        setattr(parent, attr, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def _first_input(data: Dataset) -> torch.Tensor:
    item = data[0]
    x = item if isinstance(item, torch.Tensor) else item[0]
    return x.unsqueeze(0).contiguous()


# -- data -------------------------------------------------------------------------------------


def image_data(
    spec: str, *, image_size: int, split: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[Dataset, Dataset, Dataset, int | None]:
    """(train, val, test, number of classes) for ``"digits"``, ``"imagefolder:PATH"`` or
    ``"images:PATH"`` (unlabelled: the number of classes is None)."""
    if spec == "digits":
        return (*digits_images(image_size), 10)
    scheme, _, path = spec.partition(":")
    if scheme == "imagefolder" and path:
        return image_folder(Path(path), image_size=image_size, split=split, seed=seed)
    if scheme == "images" and path:
        return (*image_files(Path(path), image_size=image_size, split=split, seed=seed), None)
    raise ConfigError(f"unknown data {spec!r}; use 'digits', 'imagefolder:PATH' or 'images:PATH'")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UnlabelledImages(Dataset):
    """Image files as ImageNet-normalized tensors (resized, centre-cropped), no labels."""

    def __init__(self, files: list[Path], image_size: int) -> None:
        from torchvision import transforms

        self.files = files
        self.transform = transforms.Compose(
            [
                transforms.Resize(image_size),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as image:
            return self.transform(image.convert("RGB"))


def image_files(
    root: Path, *, image_size: int, split: tuple[float, float, float], seed: int
) -> tuple[Dataset, Dataset, Dataset]:
    """The image files under ``root`` (any depth), split by ``split`` into unlabelled train
    (calibration, distillation), val and test sets that share no file."""
    if not root.is_dir():
        raise ConfigError(f"image directory {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    train, val, test = (UnlabelledImages([files[i] for i in p], image_size) for p in _split(len(files), split, seed, root))
    return train, val, test


def _split(n: int, split: tuple[float, float, float], seed: int, root: Path) -> tuple[list[int], ...]:
    """Indices of ``n`` images in three disjoint seeded parts of the ``split`` fractions."""
    if len(split) != 3 or abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
        raise ConfigError(f"split must be three positive fractions summing to 1, got {split}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train, n_val = int(split[0] * n), int(split[1] * n)
    pieces = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    if min(len(p) for p in pieces) == 0:
        raise ConfigError(f"{root}: {n} images are too few to split {split} (a split would be empty)")
    return pieces


def digits_images(image_size: int) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """The digits splits as 3-channel ``image_size`` images, ImageNet-normalized."""
    from autoshrink.workloads.digits import digits_splits

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for ds in digits_splits():
        x, y = ds.tensors
        x = (x * 0.5 + 0.5).clamp(0, 1)  # back to [0, 1]
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        out.append(TensorDataset(((x.repeat(1, 3, 1, 1) - mean) / std).contiguous(), y))
    return out[0], out[1], out[2]


def image_folder(
    root: Path, *, image_size: int, split: tuple[float, float, float], seed: int
) -> tuple[Dataset, Dataset, Dataset, int]:
    """An image folder (``train/val/test`` sub-folders, or class folders split by ``split``)."""
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise ConfigError(f"image folder {root} does not exist")
    tf = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    parts = [root / p for p in ("train", "val", "test")]

    def folder(path: Path) -> Any:
        try:
            return datasets.ImageFolder(str(path), transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:  # no class folders / no images
            raise ConfigError(f"image folder {path}: {exc}") from None

    if all(p.is_dir() for p in parts):
        train, val, test = (folder(p) for p in parts)
        if not (train.classes == val.classes == test.classes):
            raise ConfigError(f"{root}: train/, val/ and test/ must hold the same class folders")
        return train, val, test, len(train.classes)
    if any(p.is_dir() for p in parts):
        raise ConfigError(f"{root}: give all three of train/, val/ and test/, or none (then it is split)")
    full = folder(root)
    train, val, test = (Subset(full, p) for p in _split(len(full), split, seed, root))
    return train, val, test, len(full.classes)


def export_digits_folder(root: Path, *, image_size: int = 32) -> dict[str, int]:
    """Write the digits splits as an image folder (``train/val/test/<digit>/<n>.png``).

    A real image folder made from data that ships with scikit-learn, to try
    ``--data imagefolder:PATH`` without downloading anything. Returns images per split.
    """
    from PIL import Image

    from autoshrink.workloads.digits import digits_splits

    counts = {}
    for part, ds in zip(("train", "val", "test"), digits_splits()):
        x, y = ds.tensors
        x = F.interpolate((x * 0.5 + 0.5).clamp(0, 1), size=(image_size, image_size), mode="bilinear")
        for i, (img, label) in enumerate(zip(x, y)):
            folder = root / part / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img[0].numpy() * 255).astype("uint8"), mode="L").convert("RGB").save(folder / f"{i}.png")
        counts[part] = len(y)
    return counts
