"""The README's commands and Python examples run as written (from a folder with ../shared beside it)."""

import os
import re
import shlex
import subprocess
import sys

from PIL import Image

from conftest import REPO_ROOT, SHARED

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
