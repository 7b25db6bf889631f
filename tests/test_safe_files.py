"""Damaged weight files and pickles that carry code: named errors, and the code never runs."""

import pickle
import random

import numpy as np
import pytest
import torch
from hostile_files import RunsCode, truncate
from safetensors.torch import save_file

from ramit_hf.safe_files import (
    DamagedFileError,
    UnsafeFileError,
    check_safetensors_file,
    check_weight_files,
    load_torch_file,
)


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, path)
    with pytest.raises(UnsafeFileError) as caught:
        load_torch_file(path, "the weights")
    message = str(caught.value)
    assert str(path) in message and "holds code" in message and "was not loaded" in message
    assert "weights_only=False" not in message and "weights_only" not in message
    assert not marker.exists()
    # a plain pickle (not torch.save's zip format) is refused the same way
    with open(path, "wb") as file:
        pickle.dump(RunsCode(marker), file)
    with pytest.raises(UnsafeFileError, match="holds code"):
        load_torch_file(path)
    assert not marker.exists()


def test_files_that_are_no_pickle_are_damaged_not_code(tmp_path):
    path = tmp_path / "model.pth"
    for data in (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), bytes(random.Random(0).randrange(256) for _ in range(999))):
        path.write_bytes(data)
        with pytest.raises(DamagedFileError, match="model.pth: the checkpoint is not a PyTorch file"):
            load_torch_file(path, "the checkpoint")
    with open(path, "wb") as file:
        pickle.dump({"plain": [1, 2]}, file, protocol=4)
    with pytest.raises(DamagedFileError, match="a pickle that imports nothing"):
        load_torch_file(path)


def test_code_is_named_in_every_pickle_format(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pth"
    for legacy in (False, True):
        torch.save({"w": torch.zeros(2), "payload": RunsCode(marker)}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UnsafeFileError, match=r"holds code.*\(it would call [\w.]+ when loaded\)"):
            load_torch_file(path)
    for protocol in (2, 4):
        with open(path, "wb") as file:
            pickle.dump(RunsCode(marker), file, protocol=protocol)
        with pytest.raises(UnsafeFileError, match=r"it would call [\w.]+ when loaded"):
            load_torch_file(path)
    assert not marker.exists()


def test_the_trainers_own_files_load(tmp_path):
    # what transformers' Trainer writes into a checkpoint: tensors, and Python/numpy/torch random states
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, tmp_path / "rng_state.pth")
    torch.save({"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]}, tmp_path / "optimizer.pt")
    torch.save({"last_epoch": 3, "_last_lr": [1e-3]}, tmp_path / "scheduler.pt")
    save_file({"w": torch.ones(3, 3)}, tmp_path / "model.safetensors")
    check_weight_files(tmp_path)
    assert load_torch_file(tmp_path / "rng_state.pth")["numpy"][0] == "MT19937"


def test_truncated_and_foreign_files_are_named(tmp_path):
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(64, 64)}, weights)
    check_safetensors_file(weights)
    truncate(weights)
    with pytest.raises(DamagedFileError, match=r"model.safetensors: truncated safetensors file \("):
        check_safetensors_file(weights)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DamagedFileError, match="not a valid safetensors file"):
        check_weight_files(tmp_path)
    weights.unlink()
    checkpoint = tmp_path / "optimizer.pt"
    torch.save({"state": {}, "param_groups": []}, checkpoint)
    truncate(checkpoint)
    with pytest.raises(DamagedFileError, match="optimizer.pt: the checkpoint file optimizer.pt is truncated"):
        check_weight_files(tmp_path)


def test_the_trainers_record_of_its_arguments_is_not_checked_since_nothing_loads_it(tmp_path):
    from transformers import TrainingArguments

    torch.save(TrainingArguments(output_dir=str(tmp_path / "run"), report_to="none"), tmp_path / "training_args.bin")
    check_weight_files(tmp_path)  # a pickle of an object: it would be refused, but it is never unpickled
    with pytest.raises(UnsafeFileError):
        load_torch_file(tmp_path / "training_args.bin")


def _digest_of(path) -> str | None:
    import json
    import struct

    with open(path, "rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        return json.loads(file.read(size)).get("__metadata__", {}).get("ramit_hf.sha256")


def test_weights_the_library_writes_carry_a_digest_that_every_load_verifies(tmp_path):
    from conftest import small_config

    from ramit_hf import RamitForImageRestoration
    from ramit_hf.convert import save_model_folder
    from ramit_hf.inference import ModelLoadError, load_model

    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config()).eval()
    folder = save_model_folder(model, tmp_path / "model")
    weights = folder / "model.safetensors"
    assert len(_digest_of(weights)) == 64
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(RamitForImageRestoration.from_pretrained(folder)(x).reconstruction, model(x).reconstruction)
    # 64 inverted bytes inside the tensor data: the weights load, and would restore images wrongly
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match="model.safetensors: the weights changed since ramit_hf wrote them"):
        RamitForImageRestoration.from_pretrained(folder)
    with pytest.raises(ModelLoadError, match="changed since ramit_hf wrote them"):
        load_model(folder)


def test_weight_files_without_a_digest_load_as_before(tmp_path):
    save_file({"weight": torch.ones(3, 3)}, str(tmp_path / "plain.safetensors"))
    assert _digest_of(tmp_path / "plain.safetensors") is None
    check_safetensors_file(tmp_path / "plain.safetensors")
