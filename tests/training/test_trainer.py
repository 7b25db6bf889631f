"""RamitTrainer and recipe runs: real tiny training, gradient accumulation, checkpointing, the paper's schedule."""

import json

import numpy as np
import pytest
import torch
from conftest import checkpoint, shared_path
from PIL import Image
from tiny_runs import one_thread, tiny_recipe  # noqa: F401 (one_thread: autouse fixture)
from transformers import TrainerCallback

from ramit_hf import RamitForImageRestoration, convert_original_checkpoint
from ramit_hf.inference import load_model, restore_tensor
from ramit_hf.protocol.metrics import psnr, to_uint8
from ramit_hf.training.learning_rate import paper_learning_rate
from ramit_hf.training.models import build_model, model_config
from ramit_hf.training.recipes import load_recipe
from ramit_hf.training.run import prepare_training
from ramit_hf.training.schedule import ProgressiveSchedule
from ramit_hf.training.trainer import QualityMetrics, restoration_loss


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory):
    """Two real validation images, cropped small (96 x 96 Set5 HR regions) to keep evaluation fast."""
    folder = tmp_path_factory.mktemp("val")
    for name in ("butterfly", "bird"):
        with Image.open(shared_path("testsets", "Set5", "HR", f"{name}.png")) as image:
            image.crop((64, 64, 160, 160)).save(folder / f"{name}.png")
    return folder


class GradientRecorder(TrainerCallback):
    """Copies of the gradients just before the first optimizer step."""

    def __init__(self):
        self.gradients = None
        self.checkpointing = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.gradients is None:
            self.gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            self.checkpointing = model.is_activation_checkpointing


def test_tiny_training_run_improves_validation(tmp_path, val_folder):
    recipe = tiny_recipe(eval_steps=20, max_steps=40, patch_sizes=[32])
    run = prepare_training(
        recipe, shared_path("testsets", "Set14", "HR"), val_folder, tmp_path / "run", disable_tqdm=True
    )
    before = {k.replace(f"_{val_folder.name}_", "_"): v for k, v in run.trainer.evaluate().items()}
    run.train()
    after = {k.replace(f"_{val_folder.name}_", "_"): v for k, v in run.trainer.evaluate().items()}
    assert after["eval_l1"] < before["eval_l1"] - 0.02, (before, after)
    assert after["eval_psnr"] > before["eval_psnr"] + 2.0, (before, after)

    # eval_psnr is the paper's protocol: restore, round to 8 bits, Y channel, 2 px border, mean over images
    model = run.trainer.model.eval()
    scores = []
    for pair in run.trainer.eval_dataset[val_folder.name]:
        out = restore_tensor(model, pair["pixel_values"][None])[0].permute(1, 2, 0).numpy()
        target = to_uint8(pair["labels"].permute(1, 2, 0).numpy())
        scores.append(psnr(to_uint8(out), target, crop_border=2, test_y_channel=True))
    assert after["eval_psnr"] == pytest.approx(np.mean(scores), abs=1e-4)

    # every checkpoint and the final folder load with from_pretrained and carry the image processor
    output = tmp_path / "run"
    for folder in [output, *sorted(output.glob("checkpoint-*"))]:
        assert (folder / "preprocessor_config.json").is_file() and (folder / "model.safetensors").is_file()
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    reloaded = load_model(output)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0)
    card = (output / "README.md").read_text()
    assert "recipe `sr-x2`" in card and "40 of the recipe's" in card and "| PSNR | SSIM |" in card
    assert "Delivered weights: the final weights (step 40)" in card
    assert json.loads((output / "ramit_run.json").read_text())["train_images"] == 14


def first_step_gradients(tmp_path, name, **fields):
    recorder = GradientRecorder()
    recipe = tiny_recipe(max_steps=1, eval_steps=1, **fields)
    run = prepare_training(
        recipe, shared_path("testsets", "Set5", "HR"), None, tmp_path / name, callbacks=[recorder], disable_tqdm=True
    )
    run.trainer.train()
    return recorder


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    # 2 micro-batches of 4 patches and one batch of 8 hold the same patches (the schedule lays them out so)
    accumulated = first_step_gradients(tmp_path, "ga", batch_sizes=[4], gradient_accumulation_steps=2)
    single = first_step_gradients(tmp_path, "single", batch_sizes=[8])
    assert accumulated.gradients.keys() == single.gradients.keys()
    for name, gradient in single.gradients.items():
        torch.testing.assert_close(accumulated.gradients[name], gradient, rtol=1e-4, atol=1e-7, msg=name)
    # (weights after Adam steps are no check: Adam normalises the gradient's scale away, and turns float noise in
    # near-zero gradients into full-size updates)
    scale = max(g.abs().max().item() for g in single.gradients.values())
    assert scale > 1e-3  # the gradients compared above are not vanishing


def test_gradient_checkpointing_runs_and_gives_the_same_gradients(tmp_path):
    plain = first_step_gradients(tmp_path, "plain")
    checkpointed = first_step_gradients(tmp_path, "checkpointed", gradient_checkpointing=True)
    assert checkpointed.checkpointing and not plain.checkpointing
    for name, gradient in plain.gradients.items():
        torch.testing.assert_close(checkpointed.gradients[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_paper_learning_rate_schedules():
    # x2: DIV2K (800 images x 80), 2 GPUs x 32 -> 1000 steps per epoch, peak 4e-4, warm-up 20 epochs
    recipe = load_recipe("sr-x2")
    schedule = ProgressiveSchedule(64000, 500, [0], [64], [32], world_size=2)
    lr = paper_learning_rate(recipe, schedule)
    assert lr(0) == 0 and lr(10_000) == pytest.approx(2e-4) and lr(20_000) == pytest.approx(4e-4)
    assert lr(200_000) == pytest.approx(4e-4) and lr(200_001) == pytest.approx(2e-4)
    assert lr(430_000) == pytest.approx(4e-4 / 16) and lr(499_999) == pytest.approx(4e-4 / 64)
    # one GPU: half the total batch, half the learning rate (and twice the steps per epoch)
    single = ProgressiveSchedule(64000, 500, [0], [64], [32])
    assert paper_learning_rate(recipe, single)(single.step_at_epoch(30)) == pytest.approx(2e-4)
    # denoising: the peak follows the progressive batch (32, 16, 8 per GPU), halvings at 200, 300, 350, 375
    recipe = load_recipe("color-dn")
    schedule = ProgressiveSchedule(25782, 400, [0, 100, 200], [64, 96, 128], [32, 16, 8], world_size=2)
    lr = paper_learning_rate(recipe, schedule)

    def at(epoch):
        return lr(schedule.step_at_epoch(epoch))

    assert at(50) == pytest.approx(4e-4) and at(150) == pytest.approx(2e-4) and at(250) == pytest.approx(0.5e-4)
    assert at(360) == pytest.approx(1e-4 / 8)
    # x3 warm start: 50 epochs at the peak (head only), then warm-up 10 and halvings counted from epoch 50
    recipe = load_recipe("sr-x3")
    schedule = ProgressiveSchedule(64000, 300, [0], [64], [32], world_size=2)
    lr = paper_learning_rate(recipe, schedule)

    def at(epoch):
        return lr(schedule.step_at_epoch(epoch))

    assert at(0) == at(49.5) == pytest.approx(4e-4)
    assert at(50) == 0 and at(55) == pytest.approx(2e-4) and at(90) == pytest.approx(4e-4)
    assert at(120) == pytest.approx(2e-4) and at(299) == pytest.approx(4e-4 / 64)


def test_warm_start_trains_the_new_head_first(tmp_path):
    x2 = RamitForImageRestoration(model_config(tiny_recipe()))
    x2.save_pretrained(tmp_path / "x2")
    # Set5: 5 images x 4 = 20 patches per epoch -> 5 steps per epoch; epoch 1 trains only the head
    recipe = tiny_recipe(
        "sr-x3",
        init_from=str(tmp_path / "x2"),
        warm_start_epochs=1,
        epochs=2,
        warmup_epochs=0.5,
        eval_steps=10,
        patch_sizes=[16],
    )
    model, note = build_model(recipe)
    assert "except the reconstruction head" in note and model.config.upscale == 3
    body = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("reconstruction.")}
    for name, tensor in body.items():
        torch.testing.assert_close(tensor, x2.state_dict()[name], rtol=0, atol=0)

    snapshots = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    run = prepare_training(
        recipe, shared_path("testsets", "Set5", "HR"), None, tmp_path / "x3", callbacks=[Snapshot()], disable_tqdm=True
    )
    assert run.trainer.head_only_steps == 5
    initial_head = {n: p.detach().clone() for n, p in run.model.named_parameters() if n.startswith("reconstruction.")}
    run.trainer.train()
    for name, tensor in body.items():
        torch.testing.assert_close(snapshots[5][name], tensor, rtol=0, atol=0, msg=name)
        # the first full step has learning rate 0 (the warm-up starts there), the next one moves the body
        assert not torch.equal(snapshots[7][name], tensor) or "logit_scale" in name or "bias_table" in name
    assert all(not torch.equal(snapshots[1][n], t) for n, t in initial_head.items() if n.endswith("weight"))
    # the optimizer restarted when full training began: its step counts cover only the last 5 steps
    state = run.trainer.optimizer.state
    steps = {int(s["step"]) for s in state.values()}
    assert steps == {5}


def test_init_from_original_checkpoints():
    path = checkpoint("RAMiT-slimSR_X2.pth")
    model, note = build_model(load_recipe("sr-x2", {"init_from": str(path)}))
    reference = convert_original_checkpoint(path)
    assert model.config.variant == "RAMiT-slimSR" and note.startswith("its weights from")
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)
    # x4 from the x2 weights: same body, fresh head, x4 normalisation
    model, _ = build_model(load_recipe("sr-x4", {"init_from": str(path)}))
    assert model.config.upscale == 4 and model.config.image_std == [0.2352, 0.2244, 0.2349]
    assert torch.equal(model.state_dict()["ramit.shallow.weight"], reference.state_dict()["ramit.shallow.weight"])
    assert model.state_dict()["reconstruction.conv.weight"].shape[0] == 3 * 16


def test_model_config_for_variants_and_overrides():
    config = model_config(load_recipe("sr-x2", {"variant": "RAMiT-slimLLE", "model.drop_path_rate": 0.1}))
    assert (config.embed_dim, config.depths, config.upscale, config.task) == (48, [4, 2, 2, 4], 2, "sr-x2")
    assert config.drop_path_rate == 0.1 and config.reciprocal_helper
    gray = model_config(load_recipe("gray-dn", {"preset": "ramit-sr-x2"}))
    assert (gray.num_channels, gray.upscale, gray.reciprocal_helper) == (1, 1, False)


def test_losses_and_metric_aggregation():
    prediction, target = torch.tensor([0.5, 0.0]), torch.tensor([0.0, 0.0])
    assert restoration_loss(prediction, target, "l1").item() == pytest.approx(0.25)
    assert restoration_loss(prediction, target, "mse").item() == pytest.approx(0.125)
    charbonnier = (np.sqrt(0.25 + 1e-6) + np.sqrt(1e-6)) / 2
    assert restoration_loss(prediction, target, "charbonnier").item() == pytest.approx(charbonnier)
    metrics = QualityMetrics()

    class Prediction:
        def __init__(self, rows):
            self.predictions = torch.tensor(rows)

    assert metrics(Prediction([[30.0, 0.9, 0.1]])) is None
    assert metrics(Prediction([[32.0, 0.7, 0.3], [34.0, 0.8, 0.2]]), compute_result=True) == pytest.approx(
        {"psnr": 32.0, "ssim": 0.8, "l1": 0.2}
    )


def test_ramit_trainer_with_plain_datasets(tmp_path, val_folder):
    # RamitTrainer on its own: a dataset of single (input, target) images, the Trainer's sampler and scheduler
    from transformers import TrainingArguments

    from ramit_hf.training.sources import load_source
    from ramit_hf.training.trainer import RamitTrainer
    from ramit_hf.training.validation import validation_dataset

    pairs = validation_dataset(load_source(val_folder, task="sr-x2"), "sr-x2")
    train = [pairs[i % 2] for i in range(8)]
    model = RamitForImageRestoration(model_config(tiny_recipe()))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=1e-3,
        batch_eval_metrics=True,
        remove_unused_columns=False,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = RamitTrainer(model, args, train, pairs, loss="charbonnier")
    before = trainer.evaluate()["eval_psnr"]
    trainer.train()
    assert trainer.evaluate()["eval_psnr"] > before
    assert isinstance(trainer.optimizer.optimizer, torch.optim.Adam)
    with pytest.raises(ValueError, match="batch_eval_metrics=True"):
        RamitTrainer(model, TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True), train, pairs)
