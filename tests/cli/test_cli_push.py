"""`ramit push` / scripts/push_to_hub.py: the folder a dry run writes is what the Hub gets, and it works without
ramit_hf; without a token or a connection, nothing is converted or written."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, checkpoint, run_without_ramit_hf, shared_path, small_config
from PIL import Image

from ramit_hf import RamitForImageRestoration
from ramit_hf.cli import main
from ramit_hf.convert import save_model_folder
from ramit_hf.inference import load_model, restore_tensor
from ramit_hf.protocol.metrics import to_uint8

RESULTS = REPO_ROOT / "results"
SLIM_X2 = "RAMiT-slimSR_X2.pth"
CODE_FILES = {
    "configuration_ramit.py",
    "modeling_ramit.py",
    "image_processing_ramit.py",
    "pipeline_image_restoration.py",
    "inference.py",
    "tiling.py",
    "image_io.py",
}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("push") / "ramit-slimsr-x2"
    assert main(["push", str(checkpoint(SLIM_X2)), "--dry-run", str(folder), "--results", str(RESULTS)]) == 0
    return folder


@pytest.fixture(scope="module")
def bird_crop(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "low_res.png"
    Image.open(shared_path("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")).convert("RGB").crop(
        (40, 30, 88, 70)
    ).save(path)
    return path


def test_dry_run_writes_the_repository_folder(dry_run, capsys):
    files = {p.name for p in dry_run.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} | CODE_FILES <= files
    assert not [name for name in files if name.startswith(".")]  # no staging leftovers
    config = json.loads((dry_run / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageToImage"] == "modeling_ramit.RamitForImageRestoration"
    assert config["auto_map"]["AutoConfig"] == "configuration_ramit.RamitConfig"
    assert config["custom_pipelines"]["image-restoration"]["impl"] == (
        "pipeline_image_restoration.ImageRestorationPipeline"
    )
    assert config["variant"] == "RAMiT-slimSR" and config["task"] == "sr-x2"
    processor = json.loads((dry_run / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_ramit.RamitImageProcessor"
    # the card is the committed one: both come from results/*.json
    committed = REPO_ROOT / "model_cards" / "ramit-slimsr-x2" / "README.md"
    assert (dry_run / "README.md").read_text() == committed.read_text()
    # the weights are the converted checkpoint's
    converted = load_model(checkpoint(SLIM_X2))
    assert b'"ramit_hf.sha256"' in (dry_run / "model.safetensors").read_bytes()[:4096]  # verified on every load
    loaded = RamitForImageRestoration.from_pretrained(dry_run)
    for name, tensor in converted.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_dry_run_folder_restores_in_a_fresh_process_without_ramit_hf(dry_run, bird_crop, tmp_path):
    model = load_model(checkpoint(SLIM_X2))
    pixels = torch.from_numpy(np.array(Image.open(bird_crop))).permute(2, 0, 1)[None].float() / 255
    np.save(tmp_path / "expected.npy", to_uint8(restore_tensor(model, pixels)[0].permute(1, 2, 0).numpy()))
    # OMP_WAIT_POLICY: idle OpenMP threads sleep rather than spin, which keeps a small restoration fast when other
    # processes share the cores
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    result = run_without_ramit_hf(
        f"""
        import numpy as np
        from transformers import pipeline
        pipe = pipeline("image-restoration", model={str(dry_run)!r}, trust_remote_code=True)
        out = np.asarray(pipe({str(bird_crop)!r}))
        expected = np.load({str(tmp_path / "expected.npy")!r})
        assert out.shape == expected.shape == (80, 96, 3), out.shape
        assert np.array_equal(out, expected), np.abs(out.astype(int) - expected).max()
        print("hub folder OK", type(pipe).__module__, pipe.task)
        """,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hub folder OK transformers_modules" in result.stdout and "image-restoration" in result.stdout


def test_the_cards_usage_code_runs(dry_run, bird_crop, tmp_path, monkeypatch):
    card = (dry_run / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    expected = None
    for code in blocks:
        code = code.replace('"ramit-hf/ramit-slimsr-x2"', repr(str(dry_run)))
        code = code.replace('"low_res.png"', repr(str(bird_crop)))
        namespace = {}
        exec(compile(code, "<card>", "exec"), namespace)
        if (tmp_path / "restored.png").exists():
            restored = np.asarray(Image.open(tmp_path / "restored.png"))
            assert restored.shape == (80, 96, 3)
            expected = restored if expected is None else expected
            assert np.array_equal(restored, expected)  # the pipeline and the model + processor agree
        if "ImageRestorationPipeline" in namespace:  # the ramit_hf block: the library's classes, no remote code
            assert type(namespace["pipe"]).__module__ == "ramit_hf.pipeline_image_restoration"
            assert np.array_equal(np.asarray(namespace["restored"]), expected)


def test_dry_run_refuses_to_overwrite_without_the_flag(dry_run, capsys):
    before = (dry_run / "model.safetensors").stat().st_mtime_ns
    assert main(["push", str(checkpoint(SLIM_X2)), "--dry-run", str(dry_run)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (dry_run / "model.safetensors").stat().st_mtime_ns == before


def test_namespace_released_folder_and_overwrite(tmp_path, capsys):
    released = tmp_path / "checkpoints"
    released.mkdir()
    for name in ("RAMiT-slimLLE_LLE.pth", SLIM_X2, "notes.txt"):
        (released / name).symlink_to(checkpoint(SLIM_X2).parent / name if name.endswith(".pth") else os.devnull)
    out = tmp_path / "hub"
    args = [
        "push",
        "--released",
        str(released),
        "--namespace",
        "someone",
        "--dry-run",
        str(out),
        "--results",
        str(RESULTS),
    ]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ramit-slimlle", "ramit-slimsr-x2"]
    printed = capsys.readouterr().out
    assert "dry run for someone/ramit-slimlle; card with 0 results" in printed
    assert "dry run for someone/ramit-slimsr-x2; card with 2 results" in printed
    usage = 'pipeline("image-restoration", model="someone/ramit-slimlle", trust_remote_code=True)'
    assert usage in (out / "ramit-slimlle" / "README.md").read_text()
    assert main(args) == 2  # the folders exist now
    assert main([*args, "--overwrite"]) == 0


def test_a_trained_folder_goes_to_a_repository_named_after_it(tmp_path, capsys):
    torch.manual_seed(0)
    folder = save_model_folder(RamitForImageRestoration(small_config(task="sr-x2")), tmp_path / "my-sr-model")
    out = tmp_path / "out"
    args = ["push", str(folder), "--dry-run", str(out), "--namespace", "me", "--results", str(tmp_path / "none")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "no results folder" in captured.err and "dry run for me/my-sr-model" in captured.out
    card = (out / "README.md").read_text()
    assert "trained with `ramit_hf`" in card and 'pipeline("image-restoration", model="me/my-sr-model"' in card
    assert torch.equal(
        RamitForImageRestoration.from_pretrained(out).ramit.shallow.weight,
        RamitForImageRestoration.from_pretrained(folder).ramit.shallow.weight,
    )


@pytest.mark.parametrize(
    "case, extra_env, extra_args, message",
    [
        ("no token", {}, [], "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN or pass --token"),
        (
            "offline",
            {"HF_HUB_OFFLINE": "1"},
            ["--token", "hf_test"],
            "HF_HUB_OFFLINE is set, so nothing can be uploaded",
        ),
        # a port on this machine where nothing listens: the connection is refused at once
        (
            "no network",
            {"HF_ENDPOINT": "http://127.0.0.1:9"},
            ["--token", "hf_test"],
            "cannot reach the Hugging Face Hub",
        ),
    ],
)
def test_push_without_token_or_network_fails_before_any_work(case, extra_env, extra_args, message, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")}
    env.update({"HF_HOME": str(tmp_path / "hf-home"), "TMPDIR": str(tmp_path / "tmp"), **extra_env})
    (tmp_path / "tmp").mkdir()
    (tmp_path / "work").mkdir()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "push_to_hub.py"), str(checkpoint(SLIM_X2)), *extra_args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path / "work",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("ramit push: error: ") and message in result.stderr, result.stderr
    assert "Writing model shards" not in result.stderr  # nothing was converted or written
    assert not any((tmp_path / "tmp").iterdir()) and not any((tmp_path / "work").iterdir())


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys):
    assert main(["push", str(checkpoint(SLIM_X2)), "--repo-id", "no-namespace", "--dry-run", str(tmp_path / "x")]) == 2
    assert "not a Hub repository id" in capsys.readouterr().err
    assert main(["push", "--dry-run", str(tmp_path / "y")]) == 2
    assert "nothing to push" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "missing.pth"), "--dry-run", str(tmp_path / "z")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    released = ["--released", str(checkpoint(SLIM_X2).parent)]
    assert main(["push", *released, "--repo-id", "me/one", "--dry-run", str(tmp_path / "w")]) == 2
    assert "--repo-id names one repository" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
