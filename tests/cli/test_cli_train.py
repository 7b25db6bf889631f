"""`ramit train` end to end: data-parallel processes (gloo), kill and exact resume, bad input, the GPU check script."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from conftest import REPO_ROOT, shared_path
from PIL import Image
from safetensors.torch import load_file

from ramit_hf.cli import main

TINY_RECIPE = {
    "base": "sr-x2",
    "name": "tiny-sr-x2",
    "model": {"embed_dim": 16, "depths": [1, 1, 1, 2], "fusion_expand_groups": 1},
    "patch_sizes": [24],
    "batch_sizes": [4],
    "dataset_repeat": 8,
    "epochs": 4,
    "warmup_epochs": 0.5,
    "milestones": [2],
    "learning_rate": 2e-3,
    "dataloader_num_workers": 0,
    "logging_steps": 4,
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny recipe file and two small real validation images (96 x 96 crops of Set5 HR)."""
    root = tmp_path_factory.mktemp("cli-train")
    (root / "tiny.json").write_text(json.dumps(TINY_RECIPE))
    (root / "val").mkdir()
    for name in ("butterfly", "bird"):
        with Image.open(shared_path("testsets", "Set5", "HR", f"{name}.png")) as image:
            image.crop((64, 64, 160, 160)).save(root / "val" / f"{name}.png")
    return root


def train_command(workspace, output, *extra):
    return [
        "train",
        "--recipe",
        str(workspace / "tiny.json"),
        "--train-data",
        str(shared_path("testsets", "Set14", "HR")),
        "--val-data",
        str(workspace / "val"),
        "--output-dir",
        str(output),
        *extra,
    ]


def environment():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_two_processes_split_the_data_and_end_identical(workspace):
    output = workspace / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO_ROOT / "scripts" / "train.py"),
        *train_command(workspace, output, "--max-steps", "6", "--eval-steps", "3", "--trace-data")[1:],
    ]
    result = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    trace = output / "data_trace"
    records = {
        rank: [json.loads(line) for line in (trace / f"rank{rank}.jsonl").read_text().splitlines()] for rank in (0, 1)
    }
    # each process trained on its own micro-batch of every step: items r, r + 2, ...; disjoint sample positions
    assert [r["item"] % 2 for r in records[0]] == [0] * 6 and [r["item"] % 2 for r in records[1]] == [1] * 6
    for first, second in zip(records[0], records[1], strict=True):
        assert first["step"] == second["step"] and first["positions"][1] == second["positions"][0]
    assert [r["images"] for r in records[0]] != [r["images"] for r in records[1]]
    # gradients were averaged: both processes end with the same weights, which are the saved model's
    digests = [json.loads((trace / f"final-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert digests[0]["step"] == digests[1]["step"] == 6
    assert digests[0]["sha256"] == digests[1]["sha256"]
    summary = json.loads((output / "ramit_run.json").read_text())
    assert summary["world_size"] == 2
    assert (output / "README.md").is_file() and (output / "checkpoint-6" / "preprocessor_config.json").is_file()


def test_killed_run_resumes_exactly(workspace):
    # with an EMA of the weights, which the checkpoints carry and the delivered model is
    uninterrupted, killed = workspace / "whole", workspace / "killed"
    base = [sys.executable, "-m", "ramit_hf.cli"]
    steps = ["--max-steps", "16", "--eval-steps", "4", "--ema-decay", "0.9"]
    # both runs start together (2 cores); the second kills itself (SIGKILL) as soon as its first checkpoint is
    # complete, whatever the machine's load
    whole = subprocess.Popen(
        base + train_command(workspace, uninterrupted, *steps),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = textwrap.dedent(f"""
        import os, signal, sys
        from transformers import Trainer
        from ramit_hf.cli import main

        save = Trainer._save_checkpoint

        def save_then_die(self, *args, **kwargs):
            save(self, *args, **kwargs)
            if self.state.global_step == 4:
                os.kill(os.getpid(), signal.SIGKILL)

        Trainer._save_checkpoint = save_then_die
        sys.exit(main({train_command(workspace, killed, *steps)!r}))
    """)
    victim = subprocess.run(
        [sys.executable, "-c", killer], env=environment(), capture_output=True, text=True, timeout=300, check=False
    )
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    assert (killed / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (killed / "checkpoint-8").exists()

    resumed = subprocess.run(
        base + train_command(workspace, killed, *steps, "--resume"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint-" in resumed.stdout
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-3000:]
    for file in ("checkpoint-16/model.safetensors", "checkpoint-16/ema.safetensors", "model.safetensors"):
        expected, actual = load_file(uninterrupted / file), load_file(killed / file)
        folder = file
        assert expected.keys() == actual.keys()
        for name, tensor in expected.items():
            assert actual[name].equal(tensor), f"{folder}/{name} differs after resuming"


def run_cli(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_input_fails_before_training(workspace, tmp_path, capsys):
    out = tmp_path / "out"

    def fails(args, message):
        code, _, err = run_cli(capsys, args)
        assert code == 2 and message in err, err
        assert not out.exists(), "nothing may be written before the run starts"

    empty = tmp_path / "empty"
    empty.mkdir()
    fails([*train_command(workspace, out)[:3], "--train-data", str(empty), "--output-dir", str(out)], "no images in")
    fails([*train_command(workspace, out), "--set", "epoch=3"], "unknown field(s) 'epoch' (did you mean 'epochs'?)")
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text("base: sr-x2\npatch_size: 48\n")
    fails(["train", "--recipe", str(bad_recipe), "--train-data", str(empty)], "did you mean 'patch_sizes'?")
    fails([*train_command(workspace, out), "--patch-sizes", "64,96"], "one entry per phase")
    # an image smaller than the 64 px patches of the sr-x2 recipe (LR side 48 < 64)
    small = tmp_path / "small"
    small.mkdir()
    with Image.open(shared_path("testsets", "Set5", "HR", "bird.png")) as image:
        image.crop((0, 0, 96, 120)).save(small / "bird.png")
    fails(
        ["train", "--recipe", "sr-x2", "--train-data", str(small), "--output-dir", str(out)],
        "smaller than the training patch",
    )
    # LQ/HQ pairs whose names or sizes do not match
    pairs = tmp_path / "pairs"
    (pairs / "HQ").mkdir(parents=True)
    (pairs / "LQ").mkdir()
    with Image.open(shared_path("testsets", "McMaster", "HR", "1.png")) as image:
        image.save(pairs / "HQ" / "1.png")
        image.save(pairs / "LQ" / "01.png")
    fails(["train", "--recipe", "derain", "--train-data", str(pairs), "--output-dir", str(out)], "do not match")
    with Image.open(shared_path("testsets", "McMaster", "HR", "1.png")) as image:
        image.crop((0, 0, 400, 400)).save(pairs / "LQ" / "1.png")
    (pairs / "LQ" / "01.png").unlink()
    fails(["train", "--recipe", "derain", "--train-data", str(pairs), "--output-dir", str(out)], "sizes do not match")
    fails(["train", "--recipe", "sr-x3", "--train-data", str(small), "--output-dir", str(out)], "--init-from")
    fails([*train_command(workspace, out), "--resume"], "nothing to resume")
    # degradation settings out of range, an EMA decay outside (0, 1)
    fails(
        [*train_command(workspace, out), "--degradation", "realesrgan", "--set", "degradation.sinc_prob=1.2"],
        "sinc_prob",
    )
    fails([*train_command(workspace, out), "--set", "degradation.noise_range=[-5, 10]"], "noise_range must be")
    fails([*train_command(workspace, out), "--set", "degradation.jpeg_range=[0, 95]"], "jpeg_range must be")
    fails([*train_command(workspace, out), "--ema-decay", "1.0"], "ema_decay must be in (0, 1)")
    # a validation image that is also a training image
    overlap = tmp_path / "overlap"
    overlap.mkdir()
    (overlap / "copy.png").write_bytes(shared_path("testsets", "Set14", "HR", "baboon.png").read_bytes())
    fails(
        [*train_command(workspace, out)[:5], "--val-data", str(overlap), "--output-dir", str(out)], "same file content"
    )
    # position-paired folders of different lengths
    (pairs / "LQ" / "extra.png").write_bytes((pairs / "LQ" / "1.png").read_bytes())
    fails(
        ["train", "--recipe", "derain", "--train-data", str(pairs), "--pair-by-position", "--output-dir", str(out)],
        "differ in length",
    )
    # a non-empty output folder is left alone without --resume or --overwrite
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, train_command(workspace, out))
    assert code == 2 and "not empty" in err and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_recipe_overrides_on_the_command_line(capsys):
    code, out, _ = run_cli(
        capsys,
        [
            "train",
            "--recipe",
            "color-dn",
            "--print-recipe",
            "--set",
            "max_steps=50",
            "--set",
            "model.drop_path_rate=0.1",
            "--set",
            "bf16=true",
            "--patch-sizes",
            "48,64,96",
            "--learning-rate",
            "1e-4",
            "--bf16",
            "false",
        ],
    )
    assert code == 0
    recipe = yaml.safe_load(out)
    assert recipe["max_steps"] == 50 and recipe["model"] == {"drop_path_rate": 0.1}
    assert recipe["patch_sizes"] == [48, 64, 96] and recipe["learning_rate"] == 1e-4
    assert recipe["bf16"] is False  # the per-field flag wins over --set
    assert recipe["noise_sigma"] == [0.0, 50.0] and recipe["batch_sizes"] == [32, 16, 8]


def test_gpu_training_check_smoke(capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and robust on a busy machine
    try:
        run_gpu_check_smoke(capsys)
    finally:
        torch.set_num_threads(threads)


def run_gpu_check_smoke(capsys):
    spec = importlib.util.spec_from_file_location("gpu_training_check", REPO_ROOT / "scripts" / "gpu_training_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--smoke", "--workers", "0", "--shared", str(shared_path())]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in table[1:]] == ["bicubic (MATLAB)", "fp32", "bf16"]
    assert all(float(row.split("|")[5]) > 5 for row in table[1:])


def test_a_damaged_training_image_or_trainer_state_stops_the_run_by_name(workspace, tmp_path):
    # real `ramit train` processes: a truncated image passes the header check, so every image is decoded up front
    data = tmp_path / "data"
    data.mkdir()
    for index, name in enumerate(("baboon", "comic", "lenna")):
        with Image.open(shared_path("testsets", "Set14", "HR", f"{name}.png")) as image:
            image.convert("RGB").crop((0, 0, 96, 96)).save(data / f"{index}.png")
    cut = data / "1.png"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ramit_hf.cli", *train_command(workspace, out)]
    command[command.index("--train-data") + 1] = str(data)
    result = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"images that cannot be decoded in {data}: {cut}: corrupt or truncated image" in result.stderr
    assert result.stderr.rstrip().endswith("remove or replace them (nothing was trained)")
    assert not out.exists()
    # --resume onto a checkpoint whose trainer_state.json is damaged
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4, "log_hist')
    command = [sys.executable, "-m", "ramit_hf.cli", *train_command(workspace, out), "--resume"]
    result = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    state = out / "checkpoint-4" / "trainer_state.json"
    assert f"ramit train: error: cannot resume from {out / 'checkpoint-4'}: {state} is damaged (JSONDecodeError" in (
        result.stderr
    )
