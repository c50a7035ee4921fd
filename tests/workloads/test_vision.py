"""``torchvision:<name>`` workloads: every family compresses for real, data and weights from disk.

Random weights and small inputs keep these fast; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoshrink.config import Budget, ConfigError
from autoshrink.pipeline import compress
from autoshrink.plan import Plan
from autoshrink.searching import search
from autoshrink.space import SearchSpace
from autoshrink.workloads import load
from tests.tiny import HW

FAMILIES = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny"]


def write_image_folder(root: Path, classes: int = 3, per_class: int = 10, size: int = 40) -> Path:
    """Class folders of PNGs whose colour is their class (plus noise): learnable, made here."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = torch.zeros(3, size, size)
            base[c % 3] = 0.8
            img = (base + 0.2 * torch.rand(3, size, size, generator=gen)).clamp(0, 1)
            array = (img.permute(1, 2, 0).numpy() * 255).astype("uint8")
            Image.fromarray(array).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_really_shrinks(name: str, images: Path) -> None:
    wl = load(f"torchvision:{name}", data=f"imagefolder:{images}", image_size=32)
    x = torch.stack([wl.val[i][0] for i in range(2)])
    base = compress(wl.model, Plan(), train_data=wl.train, example_input=wl.example_input)
    with torch.no_grad():
        expected = wl.model(x).shape
    for plan in (Plan(prune=0.5), Plan(prune=0.5, bits=8)):
        art = compress(wl.model, plan, train_data=wl.train, example_input=wl.example_input)
        assert art(x).shape == expected == (2, 3)
        assert art.size_bytes < 0.45 * base.size_bytes, f"{name} {plan.label}: {art.size_bytes} vs {base.size_bytes}"
        prune = next(r for r in art.reports if r.technique == "prune")
        assert prune.details["params_after"] < 0.5 * prune.details["params_before"]
        assert prune.changed, "pruning must list the layers it narrowed"


def test_vision_transformer_prunes_its_mlp_and_lists_attention_as_skipped() -> None:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=256, num_classes=3)
    x = torch.randn(8, 3, 32, 32)
    art = compress(model.eval(), Plan(prune=0.5, bits=8), train_data=(x,), example_input=x[:1])
    assert art(x).shape == (8, 3)
    assert any("self_attention" in k and "MultiheadAttention" in v for k, v in art.skipped.items())
    int8 = compress(model, Plan(bits=8), train_data=(x,), example_input=x[:1])
    assert art.num_parameters < 0.75 * int8.num_parameters  # the MLP blocks lost half their width
    assert art.size_bytes < int8.size_bytes


@pytest.mark.slow
# One family: the search path does not depend on the family, and every family is compressed
# (pruned, int8) by test_every_family_really_shrinks; each other family costs 12-17 s more.
def test_three_trial_search(images: Path, tmp_path: Path) -> None:
    wl = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32)
    space = SearchSpace(prune=(0.5, 0.5, 0.1), rank=("off",), bits=(32, 8), distill_epochs=(0,))
    result = search(wl, budget=Budget(latency_ms=1000.0), space=space, trials=3, experiment="tv",
                    tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", hardware=HW)  # fmt: skip
    assert result.n_complete == 3 and result.n_failed == 0
    assert result.best is not None and result.best.measurement.size_bytes < result.baseline.measurement.size_bytes / 2
    assert result.registered_model == "autoshrink-tv@best"


def test_image_folder_with_its_own_splits_and_with_a_seeded_split(tmp_path: Path) -> None:
    for part, n in (("train", 6), ("val", 3), ("test", 3)):
        write_image_folder(tmp_path / "split" / part, per_class=n)
    wl = load("torchvision:resnet18", data=f"imagefolder:{tmp_path / 'split'}", image_size=32)
    assert (len(wl.train), len(wl.val), len(wl.test)) == (18, 9, 9)
    assert wl.model(wl.example_input).shape == (1, 3)  # head sized from the data's classes
    one = write_image_folder(tmp_path / "one", per_class=10)
    a = load("torchvision:resnet18", data=f"imagefolder:{one}", image_size=32)
    b = load("torchvision:resnet18", data=f"imagefolder:{one}", image_size=32)
    assert (len(a.train), len(a.val), len(a.test)) == (18, 6, 6)
    assert list(a.test.indices) == list(b.test.indices)  # seeded


def test_image_folder_mistakes(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "bad" / "train")
    with pytest.raises(ConfigError, match="give all three of train/, val/ and test/"):
        load("torchvision:resnet18", data=f"imagefolder:{tmp_path / 'bad'}", image_size=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="image folder .*empty"):
        load("torchvision:resnet18", data=f"imagefolder:{tmp_path / 'empty'}", image_size=32)
    with pytest.raises(ConfigError, match="unknown data 'cifar10'"):
        load("torchvision:resnet18", data="cifar10", image_size=32)


def test_digits_data_for_any_image_model() -> None:
    wl = load("torchvision:mobilenet_v3_small", data="digits", image_size=32)
    assert wl.example_input.shape == (1, 3, 32, 32)
    assert (len(wl.train), len(wl.val), len(wl.test)) == (1078, 359, 360)
    assert wl.model(wl.example_input).shape == (1, 10)


def test_weights_from_a_state_dict_file(tmp_path: Path, images: Path) -> None:
    first = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32)
    path = tmp_path / "weights.pt"
    torch.save(first.model.state_dict(), path)
    again = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32, weights=str(path))
    torch.testing.assert_close(again.model(first.example_input), first.model(first.example_input))
    with pytest.raises(ConfigError, match="cannot load .* into resnet18 with 5 classes"):
        load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32, weights=str(path), num_classes=5)


def test_torchvision_weights_come_from_the_local_cache_only(tmp_path: Path, monkeypatch, images: Path) -> None:
    import torchvision

    weights = torchvision.models.get_model_weights("resnet18").IMAGENET1K_V1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError, match=r"put resnet18-[0-9a-f]+\.pth in .*torch/hub/checkpoints"):
        load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32, weights="IMAGENET1K_V1")
    # A file in the cache (here: random weights under the expected name) is used, never downloaded.
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), cached)
    wl = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32, weights="IMAGENET1K_V1")
    torch.testing.assert_close(wl.model.conv1.weight, reference.conv1.weight)
    assert wl.model.fc.out_features == 3  # head resized to the data's classes


def test_finetuning_learns_the_data_and_is_cached(tmp_path: Path, monkeypatch, images: Path) -> None:
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path / "cache"))
    images = write_image_folder(tmp_path / "more", per_class=20)
    wl = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32, finetune_epochs=6, verbose=False)
    x = torch.stack([wl.test[i][0] for i in range(len(wl.test))])
    y = torch.tensor([wl.test[i][1] for i in range(len(wl.test))])
    with torch.no_grad():
        accuracy = float((wl.model(x).argmax(1) == y).float().mean())
    assert accuracy >= 0.8  # the colours are easy; random weights score about 1/3
    assert len(list((tmp_path / "cache").glob("finetuned-*.pt"))) == 1
    again = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32, finetune_epochs=6, verbose=False)
    torch.testing.assert_close(again.model(x), wl.model(x))


def test_random_weights_are_the_same_in_every_run(images: Path) -> None:
    # A resumed search or a repeated run file must see the same model.
    a = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32)
    b = load("torchvision:resnet18", data=f"imagefolder:{images}", image_size=32)
    torch.testing.assert_close(a.model(a.example_input), b.model(a.example_input))


def test_a_model_name_torchvision_does_not_have() -> None:
    with pytest.raises(ConfigError, match=r"no classification model 'resnet_18'; did you mean one of \['resnet18'"):
        load("torchvision:resnet_18", data="digits")


def test_unlabelled_images_are_scored_by_agreement_with_the_original_model(tmp_path: Path, images: Path) -> None:
    from autoshrink.data import batches
    from autoshrink.inputs import call_model
    from autoshrink.measuring.accuracy import score

    photos = tmp_path / "photos"  # the class folders' files, mixed in one tree: no labels
    photos.mkdir()
    for i, file in enumerate(sorted(images.rglob("*.png"))):
        (photos / f"{i:03d}.png").write_bytes(file.read_bytes())
    with pytest.raises(ConfigError, match="needs pretrained weights"):
        load("torchvision:resnet18", data=f"images:{photos}", image_size=32)
    wl = load("torchvision:resnet18", data=f"images:{photos}", image_size=32, num_classes=3)
    assert wl.evaluate is not None and wl.evaluate.__name__ == "agreement"
    assert {len(wl.train), len(wl.val), len(wl.test)} == {18, 6} and wl.example_input.shape == (1, 3, 32, 32)
    int8 = compress(wl.model, Plan(bits=8), train_data=wl.train, example_input=wl.example_input)
    by_hand = [
        (call_model(int8, x).argmax(-1) == wl.model(x).argmax(-1)).float()
        for x in batches(wl.val, 4)
    ]  # fmt: skip
    assert score(int8, wl.val, wl.evaluate) == pytest.approx(float(torch.cat(by_hand).mean()))
    assert score(compress(wl.model, Plan(), train_data=wl.train, example_input=wl.example_input), wl.val, wl.evaluate) == 1.0
    with pytest.raises(ConfigError, match="too few to split"):
        load("torchvision:resnet18", data=f"images:{tmp_path / 'photos' / '..' / 'photos'}", image_size=32,
             num_classes=3, split=(0.98, 0.01, 0.01))  # fmt: skip
