"""Model selection and validation: final weights by default, keep_best with its metric in the card, benchmark
warnings, several sets and noise levels, EMA weights, position-paired folders, train/validation overlap."""

import shutil

import numpy as np
import pytest
import torch
from conftest import checkpoint, shared_path
from PIL import Image
from safetensors.torch import load_file
from tiny_runs import one_thread, tiny_recipe  # noqa: F401 (one_thread: autouse fixture)
from transformers import TrainerCallback

from ramit_hf import convert_original_checkpoint
from ramit_hf.convert import load_original_state_dict
from ramit_hf.inference import load_model
from ramit_hf.protocol import Protocol, evaluate_model, load_test_set
from ramit_hf.training.pixels import DataError
from ramit_hf.training.recipes import RecipeError
from ramit_hf.training.run import prepare_training
from ramit_hf.training.selection import BenchmarkValidationWarning
from ramit_hf.training.sources import load_source


def tiny(task="sr-x2", **fields):
    return tiny_recipe(task, **{"learning_rate": 3e-3, **fields})


def crops(folder, set_name, names, box=(64, 64, 160, 160)):
    folder.mkdir(parents=True)
    for name in names:
        with Image.open(shared_path("testsets", set_name, "HR", f"{name}.png")) as image:
            image.convert("RGB").crop(box).save(folder / f"{name}.png")
    return folder


def weights(folder):
    return load_file(folder / "model.safetensors")


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def test_final_weights_by_default_and_best_checkpoint_on_request(tmp_path):
    val = crops(tmp_path / "Set5", "Set5", ["bird", "butterfly"])
    train = shared_path("testsets", "Set14", "HR")
    with pytest.warns(BenchmarkValidationWarning, match="Set5: it is only logged"):
        run = prepare_training(tiny(max_steps=12, eval_steps=4), train, val, tmp_path / "final", disable_tqdm=True)
    run.train()
    out = tmp_path / "final"
    assert_same(weights(out), weights(out / "checkpoint-12"))
    card = (out / "README.md").read_text()
    assert "Delivered weights: the final weights (step 12)" in card
    assert "benchmark(s) Set5; it was only logged, not used to select the weights" in card
    assert "| set5 |" in card

    with pytest.warns(BenchmarkValidationWarning, match="chosen on it"):
        run = prepare_training(
            tiny(max_steps=12, eval_steps=4, keep_best=True, best_metric="l1", learning_rate=0.05),
            train,
            val,
            tmp_path / "best",
            disable_tqdm=True,
        )
    run.train()
    state, out = run.trainer.state, tmp_path / "best"
    losses = {e["step"]: e["eval_set5_l1"] for e in state.log_history if "eval_set5_l1" in e}
    best = min(losses, key=losses.get)
    assert state.best_global_step == best and run.best_metric == "eval_set5_l1"
    assert_same(weights(out), weights(out / f"checkpoint-{best}"))
    card = (out / "README.md").read_text()
    assert f"the checkpoint of step {best}, the best by `eval_set5_l1` (keep_best)" in card
    assert "the checkpoint was selected on it: results on those sets are optimistic" in card
    assert f"at step {best}:" in card
    with pytest.raises(DataError, match="best_metric 'psnr_y' is not a validation metric"):
        prepare_training(tiny(keep_best=True, best_metric="psnr_y"), train, val, tmp_path / "bad")
    with pytest.raises(ValueError, match="keep_best selects a checkpoint by validation"):
        prepare_training(tiny(keep_best=True), train, None, tmp_path / "bad")


def test_several_sets_and_noise_levels_are_each_validated(tmp_path):
    # the released colour-denoising weights, validated on two sets at sigma 15, 25 and 50
    a = crops(tmp_path / "kodak_like", "McMaster", ["1", "2"], (0, 0, 96, 96))
    b = crops(tmp_path / "other" / "HR", "Set5", ["bird"], (0, 0, 96, 96))
    recipe = tiny("color-dn", init_from=str(checkpoint("RAMiT-1_CDN.pth")), model={}, max_steps=1, phase_epochs=[0])
    assert recipe.val_noise_sigma == [15, 25, 50]
    run = prepare_training(recipe, shared_path("testsets", "Set14", "HR"), [a, b.parent], tmp_path / "run")
    metrics = run.trainer.evaluate()
    for name in ("kodak_like", "other"):
        psnrs = [metrics[f"eval_{name}_s{sigma}_psnr"] for sigma in (15, 25, 50)]
        assert psnrs == sorted(psnrs, reverse=True) and psnrs[0] > 30, psnrs
    # each is the protocol's number (ramit evaluate --sigma 25 on the same images)
    model = load_model(checkpoint("RAMiT-1_CDN.pth"))
    expected = evaluate_model(model, load_test_set(a, Protocol("color-dn", sigma=25)), progress=False).mean_psnr
    assert metrics["eval_kodak_like_s25_psnr"] == pytest.approx(expected, abs=1e-4)
    run.train()
    card = (tmp_path / "run" / "README.md").read_text()
    rows = [line for line in card.splitlines() if line.startswith("| kodak_like_s") or line.startswith("| other_s")]
    assert len(rows) == 6


class Snapshots(TrainerCallback):
    def __init__(self):
        self.steps = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}


def test_ema_weights_are_evaluated_saved_and_delivered(tmp_path):
    val = crops(tmp_path / "val", "McMaster", ["3"])
    snapshots = Snapshots()
    recipe = tiny(max_steps=8, eval_steps=4, ema_decay=0.9)
    run = prepare_training(
        recipe, shared_path("testsets", "Set5", "HR"), val, tmp_path / "ema", callbacks=[snapshots], disable_tqdm=True
    )
    initial = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    run.train()
    # the average, recomputed from the weights after every step (decay warm-up: min(0.9, (1 + t) / (10 + t)))
    expected = {n: t.clone() for n, t in initial.items()}
    for step in range(1, 9):
        decay = min(0.9, (1 + step) / (10 + step))
        for name in expected:
            expected[name] = decay * expected[name] + (1 - decay) * snapshots.steps[step][name]
    out = tmp_path / "ema"
    delivered, raw = weights(out), weights(out / "checkpoint-8")
    for name, tensor in expected.items():
        torch.testing.assert_close(delivered[name], tensor, rtol=1e-5, atol=1e-6)
        assert torch.equal(raw[name], snapshots.steps[8][name])
    assert_same(load_file(out / "checkpoint-8" / "ema.safetensors"), {n: delivered[n] for n in expected})
    assert any(not torch.equal(delivered[n], raw[n]) for n in expected)
    assert "exponential moving average (decay 0.9, decay warm-up)" in (out / "README.md").read_text()
    # the logged validation is the average's: evaluating the delivered weights gives the same numbers
    logged = [e for e in run.trainer.state.log_history if "eval_val_psnr" in e][-1]["eval_val_psnr"]
    assert run.trainer.evaluate()["eval_val_psnr"] == pytest.approx(logged, abs=1e-5)
    for decay in (0, 1, 1.5):
        with pytest.raises(RecipeError, match=r"ema_decay must be in \(0, 1\)"):
            tiny(ema_decay=decay)


def test_basicsr_checkpoints_prefer_the_ema(tmp_path):
    original = load_original_state_dict(checkpoint("RAMiT-1_X2.pth"))
    reference = convert_original_checkpoint(checkpoint("RAMiT-1_X2.pth")).state_dict()
    raw = {k: v + 0.01 for k, v in original.items()}
    torch.save({"params": raw, "params_ema": original}, tmp_path / "basicsr.pth")
    torch.save({"params": raw}, tmp_path / "raw_only.pth")
    assert_same(convert_original_checkpoint(tmp_path / "basicsr.pth").state_dict(), reference)
    changed = convert_original_checkpoint(tmp_path / "raw_only.pth").state_dict()
    assert not torch.equal(changed["ramit.shallow.weight"], reference["ramit.shallow.weight"])


def test_position_paired_folders(tmp_path):
    (tmp_path / "HQ").mkdir()
    (tmp_path / "LQ").mkdir()
    for index, name in enumerate(("1", "2", "3")):
        with Image.open(shared_path("testsets", "McMaster", "HR", f"{name}.png")) as image:
            hq = np.array(image)[:100, :120]
        Image.fromarray(hq).save(tmp_path / "HQ" / f"normal{index:04d}.png")
        Image.fromarray(np.round(hq * 0.3).astype(np.uint8)).save(tmp_path / "LQ" / f"low_{index}.png")
    with pytest.raises(DataError, match="names do not match"):
        load_source(tmp_path, task="lle")
    source = load_source(tmp_path, task="lle", by_position=True)
    pairs = [(h.rsplit("/", 1)[-1], q.rsplit("/", 1)[-1]) for h, q in zip(*_paths(source), strict=True)]
    assert pairs == [("normal0000.png", "low_0.png"), ("normal0001.png", "low_1.png"), ("normal0002.png", "low_2.png")]
    (tmp_path / "LQ" / "low_2.png").unlink()
    with pytest.raises(DataError, match="position-paired folders differ in length: .*HQ has 3 images, .*LQ has 2"):
        load_source(tmp_path, task="lle", by_position=True)


def _paths(source):
    import datasets

    raw = source.dataset.cast_column("hq", datasets.Image(decode=False)).cast_column("lq", datasets.Image(decode=False))
    return [v["path"] for v in raw["hq"]], [v["path"] for v in raw["lq"]]


def test_validation_images_in_the_training_data_are_refused(tmp_path):
    train = tmp_path / "train"
    shutil.copytree(shared_path("testsets", "Set5", "HR"), train)
    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(train / "bird.png", val / "my_bird.png")  # another name, the same file
    shutil.copy(shared_path("testsets", "Set14", "HR", "baboon.png"), val / "baboon.png")
    with pytest.raises(DataError, match=r"1 validation image\(s\) of .* are also training images .*same file content"):
        prepare_training(tiny(), train, val, tmp_path / "run")
    assert not (tmp_path / "run").exists()
