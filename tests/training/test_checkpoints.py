"""Resuming refuses checkpoints whose files carry code or are damaged, before the Trainer unpickles them."""

import json

import pytest
import torch
from hostile_files import RunsCode, truncate

from ramit_hf.training.checkpoints import TrainingSetupError, resolve_resume


def _checkpoint(folder, step: int):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    torch.save({"state": {}, "param_groups": [{"lr": 1e-3}]}, path / "optimizer.pt")
    return path


@pytest.mark.parametrize("name", ["optimizer.pt", "rng_state.pth", "scheduler.pt"])
def test_a_checkpoint_file_holding_code_is_refused(tmp_path, name):
    path = _checkpoint(tmp_path, 8)
    marker = tmp_path / "code-ran"
    torch.save({"payload": RunsCode(marker)}, path / name)
    for resume in (True, path):
        with pytest.raises(TrainingSetupError, match=rf"cannot resume from .*checkpoint-8: .*{name}: refused: .*code"):
            resolve_resume(tmp_path, resume)
    assert not marker.exists()


def test_a_truncated_checkpoint_file_is_named_and_a_sound_one_resumes(tmp_path):
    path = _checkpoint(tmp_path, 4)
    assert resolve_resume(tmp_path, True) == path
    truncate(path / "optimizer.pt")
    with pytest.raises(TrainingSetupError, match=r"optimizer.pt is truncated, corrupt or not a PyTorch file"):
        resolve_resume(tmp_path, True)
