import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, checkpoint, shared_path, small_config
from PIL import Image

from ramit_hf import RamitForImageRestoration
from ramit_hf.cli import main
from ramit_hf.convert import save_model_folder
from ramit_hf.image_io import load_image, save_image
from ramit_hf.protocol.metrics import psnr

BIRD_LR = ("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")


@pytest.fixture(scope="module")
def slim_folder(tmp_path_factory):
    """A tiny RAMiT x2 (random weights) saved as a model folder: the command's behaviour does not depend on weights;
    the README test below runs the released RAMiT-1 x2."""
    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config())
    return str(save_model_folder(model, tmp_path_factory.mktemp("models") / "tiny-x2"))


@pytest.fixture(scope="module")
def bird():
    return Image.open(shared_path(*BIRD_LR)).convert("RGB")


@pytest.fixture
def inputs(tmp_path, bird):
    """A small tree: two PNGs, a JPEG in a sub-folder, a hidden file (left out)."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    bird.crop((0, 0, 24, 20)).save(root / "a.png")
    bird.crop((30, 30, 54, 50)).save(root / "b.png")
    bird.crop((60, 60, 92, 84)).save(root / "sub" / "c.jpg", quality=95)
    bird.crop((0, 0, 8, 8)).save(root / ".hidden.png")
    return root


def _cli(*args) -> int:
    return main(["restore", *map(str, args)])


def test_readme_command_restores_bird(tmp_path):
    # the README's command, through `python -m ramit_hf.cli`, with the released RAMiT-1 x2 weights
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ramit_hf.cli",
            "restore",
            str(shared_path(*BIRD_LR)),
            "-o",
            "outputs/",
            "--model",
            str(checkpoint("RAMiT-1_X2.pth")),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = tmp_path / "outputs" / "birdx2.png"
    assert "144x144 -> 288x288" in result.stdout and os.path.join("outputs", "birdx2.png") in result.stdout
    assert re.search(r"in \d+\.\d s", result.stdout) and "RAMiT-1 sr-x2" in result.stdout
    restored = np.asarray(Image.open(output))
    hr = np.asarray(Image.open(shared_path("testsets", "Set5", "HR", "bird.png")).convert("RGB"))
    assert restored.shape == (288, 288, 3)
    assert psnr(restored, hr, crop_border=2, test_y_channel=True) > 42.0  # RAMiT-1 x2 on bird: 43.35 dB


def test_files_folders_and_globs_keep_relative_names(tmp_path, inputs, slim_folder, capsys, bird):
    bird.crop((0, 0, 16, 16)).save(tmp_path / "single.bmp")
    out = tmp_path / "out"
    code = _cli(inputs, tmp_path / "single.bmp", str(tmp_path / "in" / "*.png"), "-o", out, "--model", slim_folder)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    # a.png/b.png come from the folder and again from the glob: restored once; JPEG -> PNG, BMP kept
    assert written == ["a.png", "b.png", "single.bmp", os.path.join("sub", "c.png")]
    assert Image.open(out / "a.png").size == (48, 40) and Image.open(out / "sub" / "c.png").size == (64, 48)
    assert "restored 4 images into" in captured.out
    assert "restoring" in captured.err  # a progress bar for more than one image


def test_single_file_output_name(tmp_path, inputs, slim_folder, capsys):
    code = _cli(inputs / "a.png", "-o", tmp_path / "restored.png", "--model", slim_folder, "--tile", "16")
    assert code == 0 and Image.open(tmp_path / "restored.png").size == (48, 40)


def test_never_overwrites_without_the_flag(tmp_path, inputs, slim_folder, capsys):
    out = tmp_path / "out"
    assert _cli(inputs / "a.png", "-o", out, "--model", slim_folder) == 0
    (out / "a.png").write_bytes(b"precious")
    code = _cli(inputs / "a.png", inputs / "b.png", "-o", out, "--model", slim_folder)
    captured = capsys.readouterr()
    assert code == 1
    assert "a.png" in captured.err and "exists (pass --overwrite" in captured.err
    assert (out / "a.png").read_bytes() == b"precious" and (out / "b.png").is_file()
    assert _cli(inputs / "a.png", "-o", out, "--model", slim_folder, "--skip-existing") == 0
    assert "1 skipped" in capsys.readouterr().out
    assert _cli(inputs / "a.png", "-o", out, "--model", slim_folder, "--overwrite") == 0
    assert Image.open(out / "a.png").size == (48, 40)


def test_failures_are_listed_and_the_rest_is_written(tmp_path, inputs, slim_folder, capsys):
    (inputs / "corrupt.png").write_bytes(shared_path(*BIRD_LR).read_bytes()[:2000])
    (inputs / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"")
    out = tmp_path / "out"
    code = _cli(
        inputs,
        inputs / "notes.txt",
        tmp_path / "missing.png",
        tmp_path / "empty",
        zero,
        str(tmp_path / "*.gif"),
        "-o",
        out,
        "--model",
        slim_folder,
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "failed (6):" in err
    for line in (
        "corrupt.png: corrupt or truncated",
        "notes.txt: not an image file",
        "missing.png: no such file",
        "empty: folder contains no images",
        "zero.png: empty file",
        "*.gif: pattern matches no image or video files",
    ):
        assert line in err, line
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "b.png", os.path.join("sub", "c.png")]  # nothing for the failed inputs


def test_model_errors_exit_2_naming_the_model(tmp_path, inputs, capsys):
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    config = Swin2SRConfig(embed_dim=8, depths=[1], num_heads=[1], window_size=4)
    Swin2SRForImageSuperResolution(config).save_pretrained(tmp_path / "swin")
    assert _cli(inputs / "a.png", "-o", tmp_path / "out", "--model", tmp_path / "swin") == 2
    assert "is not a RAMiT model (its config.json has model_type 'swin2sr')" in capsys.readouterr().err
    assert _cli(inputs / "a.png", "-o", tmp_path / "out", "--model", tmp_path / "nothing.pth") == 2
    assert "nothing.pth" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        _cli(inputs / "a.png", "-o", tmp_path / "out", "--model", tmp_path / "swin", "--task", "sr-x9")
    assert exit_info.value.code == 2 and "invalid choice: 'sr-x9'" in capsys.readouterr().err


def test_16_bit_png_stays_16_bit(tmp_path, bird, slim_folder):
    eight = np.asarray(bird.crop((0, 0, 24, 20)))
    save_image(eight.astype(np.uint16) * 257 + 100, tmp_path / "in16.png")
    bird.crop((0, 0, 24, 20)).save(tmp_path / "in8.jpg")
    assert _cli(tmp_path / "in16.png", tmp_path / "in8.jpg", "-o", tmp_path / "out", "--model", slim_folder) == 0
    assert load_image(tmp_path / "out" / "in16.png").bit_depth == 16
    assert load_image(tmp_path / "out" / "in8.png").bit_depth == 8
    assert _cli(tmp_path / "in8.jpg", "-o", tmp_path / "out16", "--model", slim_folder, "--bit-depth", "16") == 0
    assert load_image(tmp_path / "out16" / "in8.png").bit_depth == 16


def test_two_processes_split_the_inputs(tmp_path, inputs, slim_folder):
    for index in range(3):
        Image.open(inputs / "a.png").rotate(90 * index).save(inputs / f"extra{index}.png")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "ramit_hf.cli",
            "restore",
            str(inputs),
            "-o",
            str(out),
            "--model",
            slim_folder,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shares = {rank: set(re.findall(rf"^\[{rank}\] .* -> (.+)$", result.stdout, re.M)) for rank in (0, 1)}
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    expected = {"a.png", "b.png", "extra0.png", "extra1.png", "extra2.png", os.path.join("sub", "c.png")}
    assert {os.path.relpath(p, out) for p in shares[0] | shares[1]} == expected
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(expected)
    assert "restored 6 images" in result.stdout and "2 processes" in result.stdout


def test_the_computation_is_printed_and_can_be_chosen(tmp_path, inputs, slim_folder, capsys):
    outputs = {}
    for computation in ("auto", "faithful"):
        out = tmp_path / computation
        code = _cli(
            inputs / "a.png", "-o", out, "--model", slim_folder, "--computation", computation, "--bit-depth", 16
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err
        # on this CPU, "auto" runs the banded computation; faithful is what was asked for
        expected = "banded computation" if computation == "auto" else "faithful computation"
        assert expected in captured.out
        outputs[computation] = np.asarray(Image.open(out / "a.png")).astype(np.int32)
    assert np.abs(outputs["auto"] - outputs["faithful"]).max() <= 2  # the same function, to 16-bit levels
