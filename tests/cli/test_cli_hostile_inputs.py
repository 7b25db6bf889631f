"""`ramit restore` / `ramit convert` given what a careless or hostile user gives them: a message naming the input
and the problem, never a wrong or partial file, never an input replaced by its output."""

import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import checkpoint, shared_path, small_config
from hostile_files import png_bomb
from PIL import Image

from ramit_hf import RamitForImageRestoration
from ramit_hf.cli import main
from ramit_hf.convert import save_model_folder
from ramit_hf.image_io import save_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_folder(RamitForImageRestoration(small_config()), tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def photo(tmp_path):
    image = np.asarray(Image.open(shared_path("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")).convert("RGB"))
    path = tmp_path / "in" / "bird.png"
    save_image(image[:40, :48], path)
    return path


def _restore(*args) -> int:
    return main(["restore", *map(str, args)])


def _files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_bomb_is_refused_before_decoding_and_nothing_is_written(tmp_path, photo, tiny, capsys):
    bomb = photo.parent / "bomb.png"
    bomb.write_bytes(png_bomb(20000, 20000))
    out = tmp_path / "out"
    assert _restore(photo.parent, "-o", out, "--model", tiny, "--quiet") == 1
    err = capsys.readouterr().err
    assert f"{bomb}: 20000x20000 = 400,000,000 pixels is more than the pixel budget of" in err
    assert _files(out) == ["bird.png"]
    # the budget is the user's to set: a tiny one refuses the photo too, 0 lifts it
    assert _restore(photo, "-o", tmp_path / "small", "--model", tiny, "--max-pixels", "100") == 1
    assert "budget of 100" in capsys.readouterr().err and not (tmp_path / "small").exists()
    assert _restore(photo, "-o", tmp_path / "free", "--model", tiny, "--max-pixels", "0") == 0
    with pytest.raises(SystemExit):
        _restore(photo, "-o", tmp_path / "x", "--model", tiny, "--max-pixels", "-3")
    assert "--max-pixels must be a whole number of pixels" in capsys.readouterr().err


def test_a_model_that_does_not_match_its_weights_writes_nothing(tmp_path, photo, tiny, capsys):
    broken = tmp_path / "broken"
    save_model_folder(RamitForImageRestoration.from_pretrained(tiny), broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "depths": [1, 1, 1, 4]}))
    out = tmp_path / "out"
    assert _restore(photo, "-o", out, "--model", broken) == 2
    err = capsys.readouterr().err
    assert "the weights do not match its configuration" in err and "ramit.stages.3.blocks.2." in err
    assert not out.exists()


def test_non_finite_outputs_are_not_written(tmp_path, photo, tiny, capsys):
    model = RamitForImageRestoration.from_pretrained(tiny)
    with torch.no_grad():
        model.ramit.shallow.weight.fill_(float("inf"))
    save_model_folder(model, tmp_path / "inf")
    # weights that hold infinity are refused when the model loads
    assert _restore(photo, "-o", tmp_path / "out", "--model", tmp_path / "inf") == 2
    assert re.search(r"ramit\.shallow\.weight holds \d+ non-finite values", capsys.readouterr().err)
    # finite weights whose output overflows: the output check refuses to write it
    with torch.no_grad():
        model.ramit.shallow.weight.fill_(3e38)
    save_model_folder(model, tmp_path / "huge")
    assert _restore(photo, "-o", tmp_path / "out", "--model", tmp_path / "huge") == 1
    assert "the model's output has" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []


def test_no_input_is_replaced_by_its_own_output(tmp_path, photo, tiny, capsys):
    original = photo.read_bytes()
    assert _restore(photo, "-o", photo, "--model", tiny, "--overwrite") == 1
    assert "is this input itself, which is never overwritten" in capsys.readouterr().err
    assert _restore(photo, "-o", photo.parent, "--model", tiny, "--overwrite") == 1
    assert "is this input itself" in capsys.readouterr().err
    assert photo.read_bytes() == original
    assert _restore(photo.parent, "-o", photo.parent, "--model", tiny, "--overwrite") == 2
    assert f"-o {photo.parent} is the input folder" in capsys.readouterr().err
    assert photo.read_bytes() == original and _files(photo.parent) == ["bird.png"]
    # an input folder inside the output folder is read, not mistaken for earlier outputs
    assert _restore(photo.parent, "-o", tmp_path, "--model", tiny) == 0
    assert "folder contains no images" not in capsys.readouterr().err
    assert (tmp_path / "bird.png").is_file() and photo.read_bytes() == original


def test_animated_images_are_refused_with_the_reason(tmp_path, photo, tiny, capsys):
    frame = Image.open(photo)
    gif = photo.parent / "anim.gif"
    frame.save(gif, save_all=True, append_images=[frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], loop=0)
    out = tmp_path / "out"
    assert _restore(gif, "-o", out, "--model", tiny) == 1
    assert "an animated or multi-page image (2 frames)" in capsys.readouterr().err
    assert not out.exists() or _files(out) == []


def test_a_glob_through_a_symlink_loop_ends(tmp_path, photo, tiny):
    root = photo.parent
    (root / "self").symlink_to(".")
    (root / "deeper").mkdir()
    save_image(np.asarray(Image.open(photo))[:16, :16], root / "deeper" / "small.png")
    result = subprocess.run(
        [sys.executable, "-m", "ramit_hf.cli", "restore", f"{root}/**/*.png", "-o", tmp_path / "out", "--model", tiny],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _files(tmp_path / "out") == ["bird.png", "deeper/small.png"]


def test_a_killed_writer_leaves_nothing_that_the_next_run_keeps(tmp_path, photo, tiny):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".keep-me.tmp").write_text("not ours")  # a hidden file of someone else: never touched
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ramit_hf.atomic import write_file_atomic\n"
            "def write(file):\n"
            "    file.write(b'half'); file.flush(); print('writing', flush=True); time.sleep(600)\n"
            f"write_file_atomic({str(out / 'bird.png')!r}, write)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait(timeout=60) == -signal.SIGKILL
    stale = [p.name for p in out.iterdir() if p.name.startswith(".bird.png.")]
    assert len(stale) == 1 and not (out / "bird.png").exists()
    assert _restore(photo, "-o", out, "--model", tiny, "--quiet") == 0
    assert sorted(p.name for p in out.iterdir()) == [".keep-me.tmp", "bird.png"]


def test_model_folders_are_written_with_the_usual_permissions(tmp_path):
    assert main(["convert", str(checkpoint("RAMiT-slimSR_X2.pth")), str(tmp_path / "model")]) == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir()}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] == modes["config.json"] and modes["config.json"] & 0o044


def test_the_pipeline_takes_a_pixel_budget(photo, tiny):
    from transformers import pipeline

    pipe = pipeline("image-restoration", model=str(tiny))
    with pytest.raises(ValueError, match=r"budget of 100\b"):
        pipe(str(photo), max_pixels=100)
    with pytest.raises(ValueError, match=r"48x40 = 1,920 pixels is more than the pixel budget of 100"):
        pipe(np.asarray(Image.open(photo)), max_pixels=100)
    assert pipe(str(photo), max_pixels=0).size == (96, 80)


@pytest.mark.parametrize(
    "stop, status, words", [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted (Ctrl-C)")]
)
def test_sigterm_and_ctrl_c_during_a_write_leave_nothing_and_say_so(tmp_path, photo, tiny, stop, status, words):
    # a real `ramit restore` in its own process, stopped while its output is being written: the write is held
    # (after its bytes are in the temporary file, before it is put in place) until the signal comes
    out = tmp_path / "out"
    # SIGINT as a terminal delivers it: a test run started in the background inherits it ignored
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import ramit_hf.atomic as atomic\n"
        "def held(fd):\n"
        "    print('writing', flush=True); time.sleep(600)\n"
        "atomic.os.fsync = held\n"
        "from ramit_hf.cli import main\n"
        f"sys.exit(main(['restore', {str(photo)!r}, '-o', {str(out)!r}, '--model', {str(tiny)!r}, '--quiet']))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert [p.name[:10] for p in out.iterdir()] == [".bird.png."]  # the temporary file, being written
        writer.send_signal(stop)
        _, err = writer.communicate(timeout=120)
    finally:
        writer.kill()
    assert writer.returncode == status
    assert (
        err.strip() == f"ramit restore: {words}: stopped; files already written are complete and nothing "
        "half-written was left"
    )
    assert list(out.iterdir()) == []


def test_devices_the_machine_lacks_are_named_errors_not_tracebacks(tmp_path, photo, tiny, capsys):
    folder = photo.parent
    for command in (("restore", photo, "-o", tmp_path / "out"), ("evaluate", "--dataset", folder, "--no-progress")):
        for device, problem in (
            ("cuda:99", r"this machine has (no cuda device|\d+ cuda devices?)"),
            ("meta", "the meta device holds no data"),
            ("gpu0", "not a device name"),
        ):
            # in this process: a traceback would be an exception out of main
            assert main([*map(str, command), "--model", str(tiny), "--device", device]) == 2
            err = capsys.readouterr().err
            assert re.fullmatch(rf"ramit {command[0]}: error: --device {device}: {problem}.*\n", err), err[-2000:]
    assert not (tmp_path / "out").exists()


def test_a_write_that_fails_midway_is_a_named_error_and_leaves_nothing(tmp_path):
    # a full disk, as a file size limit provokes it: the write fails with an OSError in the middle of the weights
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the failing write returns EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    command = [sys.executable, "-m", "ramit_hf.cli", "convert", checkpoint("RAMiT-slimSR_X2.pth"), tmp_path / "model"]
    result = subprocess.run(
        list(map(str, command)), capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"ramit convert: error: cannot write {tmp_path / 'model'}: " in result.stderr
    assert "File too large" in result.stderr and result.stderr.rstrip().endswith("nothing was written")
    assert list(tmp_path.iterdir()) == []  # no folder, no staging folder
