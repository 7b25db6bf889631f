import pytest
import torch
from conftest import golden_index

from ramit_hf import PRESETS, RamitConfig, RamitForImageRestoration
from ramit_hf.configuration_ramit import preset_name

# Parameter counts of the original implementation. Twelve come with the golden cases; RAMiT x3, x4 and color
# denoising were counted by instantiating the original code's RAMiT class with its published specs.
ORIGINAL_COUNTS_NOT_IN_GOLDEN = {"ramit-sr-x3": 948_499, "ramit-sr-x4": 960_616, "ramit-color-dn": 934_651}
GOLDEN_PRESET = {
    "RAMiT-1_X2": "ramit1-sr-x2",
    "RAMiT-1_X3": "ramit1-sr-x3",
    "RAMiT-1_X4": "ramit1-sr-x4",
    "RAMiT-1_CDN": "ramit1-color-dn",
    "RAMiT-slimSR_X2": "ramit-slimsr-x2",
    "RAMiT-slimSR_X3": "ramit-slimsr-x3",
    "RAMiT-slimSR_X4": "ramit-slimsr-x4",
    "RAMiT-slimLLE_LLE": "ramit-slimlle",
    "RAMiT_X2_randinit": "ramit-sr-x2",
    "RAMiT_GDN_randinit": "ramit-gray-dn",
    "RAMiT_DR_randinit": "ramit-derain",
    "RAMiT_LLE_randinit": "ramit-lle",
}


def expected_counts() -> dict[str, int]:
    counts = {GOLDEN_PRESET[name]: info["params"] for name, info in golden_index().items()}
    return counts | ORIGINAL_COUNTS_NOT_IN_GOLDEN


def test_every_preset_has_a_reference_count():
    assert set(expected_counts()) == set(PRESETS)
    assert len(PRESETS) == 15


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_count_equals_original(name):
    with torch.device("meta"):
        model = RamitForImageRestoration(RamitConfig.from_preset(name))
    assert sum(p.numel() for p in model.parameters()) == expected_counts()[name]


def test_preset_hyper_parameters_follow_the_golden_specs():
    for name, info in golden_index().items():
        config = RamitConfig.from_preset(GOLDEN_PRESET[name])
        spec = info["spec"]
        assert config.embed_dim == spec["dim"]
        assert config.depths == spec["depths"]
        assert config.num_heads == spec["num_heads"]
        assert config.mobivari_version == spec["mv_ver"]
        assert config.reciprocal_helper == spec["helper"]
        assert config.num_channels == info["in_chans"]
        assert config.upscale == info["upscale"]


def test_preset_overrides_and_round_trip():
    config = RamitConfig.from_preset("ramit-slimsr-x4", drop_path_rate=0.1)
    assert (config.variant, config.task, config.upscale, config.drop_path_rate) == ("RAMiT-slimSR", "sr-x4", 4, 0.1)
    again = RamitConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert preset_name("RAMiT-slimLLE", "lle") == "ramit-slimlle"


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(upscale=5), "upscale must be 1, 2, 3 or 4"),
        (dict(num_channels=2), "num_channels must be 1 or 3"),
        (dict(mobivari_version=3), "mobivari_version"),
        (dict(embed_dim=60), "divisible"),
        (dict(task="deblur"), "unknown task 'deblur'"),
        (dict(task="sr-x3", upscale=2), "needs upscale 3"),
        (dict(num_channels=1), "image_mean/image_std need 1 values"),
        (dict(depths=(2, 2, 2)), "4 stages"),
        (dict(computation="flash"), "computation"),
        (dict(banded_piece_windows=-1), "banded_piece_windows"),
    ],
)
def test_invalid_config_is_refused_with_the_reason(fields, message):
    with pytest.raises(ValueError, match=message):
        RamitConfig(**fields)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="unknown RAMiT preset 'ramit-x2'.*ramit-sr-x2"):
        RamitConfig.from_preset("ramit-x2")
    with pytest.raises(ValueError, match="no original RAMiT setting"):
        preset_name("RAMiT-1", "lle")


def test_configurations_saved_with_attention_backend_load_with_its_computation():
    # config.json files written before `computation` existed name "faithful" or "fused"
    assert RamitConfig(attention_backend="faithful").computation == "faithful"
    fused = RamitConfig(attention_backend="fused")
    assert fused.computation == "auto"
    assert "attention_backend" not in fused.to_dict()
