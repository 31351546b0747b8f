"""Parameter counts equal those of the authors' public definitions (10 classes)."""

from __future__ import annotations

import pytest

from mpbn.models import count_parameters, create

# (name, without MPBN, with channel MPBN): the MPBN authors' ResNet19 / ResNet20 / VGG16.
AUTHORS = [
    ("resnet19", 12_569_226, 12_578_186),
    ("resnet20", 11_247_946, 11_256_010),
    ("vgg16", 14_728_266, 14_736_714),
]

# Every registered model at its default settings (documented in docs/MODELS.md).
DEFAULTS = {
    "fastnet": (1_166_506, 1_168_362, 1_346_730),
    "fc_smnist": (469_760, 470_784, 470_784),
    "resnet18": (11_689_512, 11_697_320, 16_305_704),
    "resnet19": (12_569_226, 12_578_186, 15_452_810),
    "resnet20": (11_247_946, 11_256_010, 11_886_922),
    "resnet20_narrow": (272_474, 273_850, 649_306),
    "resnet34": (21_797_672, 21_812_904, 28_922_664),
    "small_cnn": (6_128, 6_224, 9_200),
    "vgg11": (11_929_920, 11_943_616, 12_241_216),
    "vgg16": (14_728_266, 14_736_714, 15_281_226),
    "vgg9": (5_993_280, 5_997_632, 6_486_848),
    "vggsnn": (9_271_498, 9_277_002, 11_114_698),
}


@pytest.mark.parametrize("name,plain,channel", AUTHORS)
def test_authors_parameter_counts(name: str, plain: int, channel: int) -> None:
    assert count_parameters(create(name, num_classes=10)) == plain
    assert count_parameters(create(name, num_classes=10, mpbn="channel")) == channel


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_documented_parameter_counts(name: str) -> None:
    counts = tuple(count_parameters(create(name, mpbn=m)) for m in ("none", "channel", "element"))
    assert counts == DEFAULTS[name]


def test_channel_mpbn_adds_two_parameters_per_neuron_channel() -> None:
    # ResNet19: 4,480 channels of LIF neurons (stem 128, 3x2x128, 3x2x256, 2x2x512).
    model = create("resnet19", mpbn="channel")
    from mpbn.layers import LIF

    channels = sum(m.membrane_norm.num_features for m in model.modules() if isinstance(m, LIF))
    assert channels == 4_480


def test_imagenet_resnet18_matches_torchvision_count() -> None:
    # No parameters in pooling or neurons: the same count as torchvision's resnet18.
    assert count_parameters(create("resnet18")) == 11_689_512


def test_docs_table_matches_the_models() -> None:
    """docs/MODELS.md (copied into the README) lists the same counts as the models."""
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "MODELS.md"
    if not doc.exists():
        pytest.skip("docs/MODELS.md not present")
    rows = {}
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in DEFAULTS:
            rows[cells[0]] = tuple(int(c.replace(",", "")) for c in cells[1:])
    assert rows == DEFAULTS
