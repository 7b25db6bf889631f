"""The README's commands and Python examples run as written (from a folder with ../shared beside it)."""

import os
import re
import shlex
import subprocess
import sys

from conftest import REPO_ROOT, SHARED
from PIL import Image

README = (REPO_ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def commands(prefix: str) -> list[list[str]]:
    lines = [line for block in blocks("bash") for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line.split("#")[0]) for line in lines if line.startswith(prefix)]


def test_readme_examples_run(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)  # the README's ../shared
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    ramit = [sys.executable, "-m", "ramit_hf.cli"]

    def run(args):
        result = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (args, result.stderr[-3000:])
        return result.stdout

    (convert,) = commands("ramit convert")
    run(ramit + convert[1:])
    assert (work / "models" / "ramit1-sr-x2" / "model.safetensors").is_file()
    evaluate = commands("ramit evaluate")[0]
    assert "32.537" in run(ramit + evaluate[1:])  # RAMiT-1 x4 on Set5, as the README's table says

    # every Python example that does not need the Hub
    python = [code for code in blocks("python") if "ramit-hf/" not in code]
    assert len(python) == 3
    for code in python:
        run([sys.executable, "-c", code])
    assert Image.open(work / "bird_x2.png").size == (288, 288)


def test_file_table_matches_the_sources():
    """Every file of the package is in the README's file table, and every entry there exists."""
    import fnmatch

    section = README[README.index("| file (under `src/ramit_hf/`) |") :]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    patterns = [p for row in rows for p in re.findall(r"`([^`]+)`", row.split(" | ")[0])]
    listed = subprocess.run(
        ["git", "ls-files", "src/ramit_hf"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [path.removeprefix("src/ramit_hf/") for path in listed]
    assert len(files) > 40

    def matches(path: str, pattern: str) -> bool:
        return fnmatch.fnmatch(path, pattern.replace("**", "*"))

    assert [f for f in files if not any(matches(f, p) for p in patterns)] == []
    assert [p for p in patterns if not any(matches(f, p) for f in files)] == []


def test_module_paths_of_earlier_releases_still_import():
    """Import paths the README, docs and cards of 0.1 showed keep working, warning with the new path."""
    import warnings

    script = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from ramit_hf.evaluation import EvaluationResult, load_result
    from ramit_hf.metrics import load_evaluate_metric, psnr
    from ramit_hf.imresize import imresize as imresize_function, modcrop
    from ramit_hf.trainer import prepare_training
    from ramit_hf.recipes import load_recipe
import ramit_hf, ramit_hf.protocol, ramit_hf.protocol.resize
assert imresize_function is ramit_hf.imresize is ramit_hf.protocol.resize.imresize
assert EvaluationResult is ramit_hf.protocol.EvaluationResult and callable(ramit_hf.metrics.ssim)
assert load_recipe("sr-x2").task == "sr-x2"
moved = sorted(str(w.message) for w in caught if issubclass(w.category, FutureWarning))
print("\\n".join(moved))
"""
    with warnings.catch_warnings():
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ramit_hf.evaluation has moved to ramit_hf.protocol" in result.stdout
    assert "ramit_hf.imresize has moved to ramit_hf.protocol.resize" in result.stdout
    assert "ramit_hf.trainer has moved to ramit_hf.training" in result.stdout
