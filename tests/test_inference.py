"""load_model and restore_tensor on models whose files do not match: every mismatch is a named error."""

import json

import pytest
import torch
from conftest import small_config
from hostile_files import RunsCode, truncate
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageToImage

from ramit_hf import ModelLoadError, RamitForImageRestoration, RamitWeightsError, load_model, restore_tensor
from ramit_hf.convert import save_model_folder
from ramit_hf.forward import NonFiniteOutputError


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    return save_model_folder(RamitForImageRestoration(small_config()), tmp_path / "tiny")


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_config_asking_for_more_blocks_than_the_weights_hold_does_not_load(folder):
    _edit_config(folder, depths=[2, 1, 1, 2])
    for load in (RamitForImageRestoration.from_pretrained, AutoModelForImageToImage.from_pretrained):
        with pytest.raises(RamitWeightsError) as caught:
            load(folder)
        message = str(caught.value)
        assert str(folder) in message and "missing from the weights" in message
        assert "ramit.stages.0.blocks.1." in message and "strict_weights=False" in message
    with pytest.raises(ModelLoadError, match="missing from the weights"):
        load_model(folder)
    # the explicit opt-out, for a new head or new layers to train
    model = RamitForImageRestoration.from_pretrained(folder, strict_weights=False)
    assert model.config.depths == [2, 1, 1, 2]


def test_weights_missing_keys_or_holding_others_do_not_load(folder):
    weights = load_file(folder / "model.safetensors")
    dropped = [k for k in weights if k.startswith("ramit.stages.3.")]
    save_file({k: v for k, v in weights.items() if k not in dropped}, folder / "model.safetensors")
    with pytest.raises(RamitWeightsError, match=rf"keys {len(dropped)} missing from the weights"):
        RamitForImageRestoration.from_pretrained(folder)
    save_file({**weights, "ramit.extra.weight": torch.zeros(3)}, folder / "model.safetensors")
    with pytest.raises(RamitWeightsError, match=r"1 not in the model \(ramit.extra.weight\)"):
        RamitForImageRestoration.from_pretrained(folder)


def test_damaged_or_code_carrying_files_in_a_model_folder_are_named(folder, tmp_path):
    truncate(folder / "model.safetensors")
    for load in (load_model, RamitForImageRestoration.from_pretrained):
        with pytest.raises(ValueError, match="model.safetensors: truncated safetensors file"):
            load(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"payload": RunsCode(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin: refused: .* holds code") as caught:
        load_model(folder)
    assert "weights_only" not in str(caught.value) and not marker.exists()


def test_a_config_that_is_not_an_object_or_out_of_range_is_named(folder):
    (folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelLoadError, match="config.json is not a configuration: it holds a JSON list"):
        load_model(folder)
    with pytest.raises(ValueError, match="config.json is not a configuration: it holds a JSON list"):
        RamitForImageRestoration.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**small_config().to_dict(), "window_size": 0}))
    with pytest.raises(ModelLoadError, match="window_size must be an integer from 1 to 64, got 0"):
        load_model(folder)


def test_non_finite_outputs_are_an_error_never_an_image(folder):
    model = load_model(folder)
    with torch.no_grad():
        model.reconstruction.conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match="non-finite values"):
        restore_tensor(model, torch.rand(1, 3, 24, 20))
    with pytest.raises(NonFiniteOutputError):
        restore_tensor(model, torch.rand(1, 3, 80, 70), tile_size=32, tile_overlap=8)
