import shutil

import pytest
import torch
from conftest import checkpoint, golden_case

from ramit_hf import CheckpointError, RamitForImageRestoration, convert_original_checkpoint
from ramit_hf.cli import main as cli
from ramit_hf.convert import infer_from_file_name, load_original_state_dict


@pytest.mark.parametrize(
    "name, expected",
    [
        ("RAMiT-1_X2.pth", ("RAMiT-1", "sr-x2")),
        ("RAMiT_GDN.pth", ("RAMiT", "gray-dn")),
        ("RAMiT_DR.pth", ("RAMiT", "derain")),
        ("/some/dir/RAMiT-slimSR_X4.pth", ("RAMiT-slimSR", "sr-x4")),
        ("ramit-slimlle_lle.pth", ("RAMiT-slimLLE", "lle")),
        ("my_weights.pth", (None, None)),
    ],
)
def test_variant_and_task_from_the_original_file_name(name, expected):
    assert infer_from_file_name(name) == expected


@pytest.mark.parametrize(
    "file, variant, task",
    [
        ("RAMiT-1_X4.pth", "RAMiT-1", "sr-x4"),
        ("RAMiT-1_CDN.pth", "RAMiT-1", "color-dn"),
        ("RAMiT-slimSR_X3.pth", "RAMiT-slimSR", "sr-x3"),
        ("RAMiT-slimLLE_LLE.pth", "RAMiT-slimLLE", "lle"),
    ],
)
def test_released_checkpoints_convert_with_everything_inferred(file, variant, task):
    model = convert_original_checkpoint(checkpoint(file))
    assert (model.config.variant, model.config.task) == (variant, task)
    assert not model.training


def test_a_renamed_file_infers_what_its_weights_tell(tmp_path):
    renamed = tmp_path / "weights.pth"
    shutil.copy(checkpoint("RAMiT-slimSR_X2.pth"), renamed)
    model = convert_original_checkpoint(renamed)
    assert (model.config.variant, model.config.task) == ("RAMiT-slimSR", "sr-x2")
    # RAMiT-1 was released for one restoration task only, so its weights tell
    shutil.copy(checkpoint("RAMiT-1_CDN.pth"), renamed)
    assert convert_original_checkpoint(renamed).config.task == "color-dn"


def test_ramit_restoration_weights_need_the_task_named():
    # RAMiT's color denoising, low-light and deraining weights share one shape
    case = golden_case("RAMiT_LLE_randinit")
    weights = {k.removeprefix("weights."): v for k, v in case.items() if k.startswith("weights.")}
    with pytest.raises(CheckpointError, match="cannot tell the task.*color-dn, lle, derain"):
        convert_original_checkpoint(weights)
    model = convert_original_checkpoint(weights, task="derain")
    assert (model.config.variant, model.config.task, model.config.reciprocal_helper) == ("RAMiT", "derain", False)


def test_state_dict_wrapped_or_saved_from_ddp_converts():
    state_dict = load_original_state_dict(checkpoint("RAMiT-slimLLE_LLE.pth"))
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state_dict.items()}}
    model = convert_original_checkpoint(wrapped, task="lle")
    reference = convert_original_checkpoint(checkpoint("RAMiT-slimLLE_LLE.pth"))
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_wrong_variant_names_what_the_weights_are():
    with pytest.raises(CheckpointError, match=r"does not hold RAMiT-1 weights.*embed_dim 48, depths \[8, 2, 2, 8\]"):
        convert_original_checkpoint(load_original_state_dict(checkpoint("RAMiT-slimSR_X2.pth")), variant="RAMiT-1")
    with pytest.raises(CheckpointError, match="named as variant 'RAMiT-1' but variant 'RAMiT' was requested"):
        convert_original_checkpoint(checkpoint("RAMiT-1_X2.pth"), variant="RAMiT")
    with pytest.raises(CheckpointError, match="cannot serve task 'sr-x3'"):
        convert_original_checkpoint(load_original_state_dict(checkpoint("RAMiT-1_X2.pth")), task="sr-x3")


def test_truncated_file_is_reported(tmp_path):
    data = checkpoint("RAMiT-1_X2.pth").read_bytes()
    truncated = tmp_path / "RAMiT-1_X2.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        convert_original_checkpoint(truncated)


def test_non_checkpoint_files_are_reported(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        convert_original_checkpoint(text)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not an original RAMiT checkpoint.*encoder.weight"):
        convert_original_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        convert_original_checkpoint(tmp_path / "missing.pth")


def test_missing_and_unexpected_keys_are_listed():
    state_dict = dict(load_original_state_dict(checkpoint("RAMiT-1_X2.pth")))
    state_dict.pop("stage2.blocks.block0.ffn.hidden.weight")
    state_dict["stage2.blocks.block0.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing \(1\): .*ffn.fc1.weight.*unexpected \(1\): .*extra.weight"):
        convert_original_checkpoint(state_dict, variant="RAMiT-1", task="sr-x2")


def test_cli_writes_a_folder_that_from_pretrained_loads(tmp_path, capsys):
    out = tmp_path / "ramit1-x2"
    assert cli(["convert", str(checkpoint("RAMiT-1_X2.pth")), str(out)]) == 0
    assert "RAMiT-1 sr-x2 (823,164 parameters)" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_ramit.py"} <= {
        p.name for p in out.iterdir()
    }
    loaded = RamitForImageRestoration.from_pretrained(out)
    assert loaded.config.task == "sr-x2"
    # an existing folder is kept unless --overwrite
    before = (out / "model.safetensors").read_bytes()
    assert cli(["convert", str(checkpoint("RAMiT-1_X3.pth")), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert cli(["convert", str(checkpoint("RAMiT-1_X3.pth")), str(out), "--overwrite"]) == 0
    assert RamitForImageRestoration.from_pretrained(out).config.task == "sr-x3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ramit1-x2"]  # no staging folders left behind
