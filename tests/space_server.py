"""The demo Space (spaces/ramit-demo/app.py) running on 127.0.0.1 for tests/test_space*.py: started once per session.

Its models are local folders that `ramit push --dry-run` writes (`ramit_hf.hub.push_to_hub(dry_run=...)`) from the
original checkpoints, and the app runs in a subprocess in which `import ramit_hf` fails, as on huggingface.co: it loads
the models with the code their folders carry (`trust_remote_code=True`).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import BLOCK_RAMIT_HF, REPO_ROOT, checkpoint

SPACE_DIR = REPO_ROOT / "spaces" / "ramit-demo"
# environment variable of each task -> the original checkpoint its test model is made from (the fast slim models)
SPACE_MODELS = {
    "RAMIT_MODEL_SR_X2": "RAMiT-slimSR_X2.pth",
    "RAMIT_MODEL_SR_X3": "RAMiT-slimSR_X3.pth",
    "RAMIT_MODEL_SR_X4": "RAMiT-slimSR_X4.pth",
    "RAMIT_MODEL_COLOR_DN": "RAMiT-1_CDN.pth",
    "RAMIT_MODEL_LLE": "RAMiT-slimLLE_LLE.pth",
}
STARTUP_TIMEOUT_S = 180

_BOOT = BLOCK_RAMIT_HF + textwrap.dedent(
    """
    import runpy
    sys.path.insert(0, {space!r})
    runpy.run_path({app!r}, run_name="__main__")
    """
)


@dataclass
class SpaceServer:
    url: str
    models: dict[str, Path]  # environment variable -> model folder
    scratch: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_models(folder: Path) -> dict[str, Path]:
    from ramit_hf.hub import push_to_hub

    models = {}
    for variable, name in SPACE_MODELS.items():
        result = push_to_hub(checkpoint(name), dry_run=folder / Path(name).stem, results_dir=REPO_ROOT / "results")
        models[variable] = result.folder
    return models


@functools.cache
def space_server() -> SpaceServer:
    """Start the app (once) and wait until it answers; it is stopped when the test session ends."""
    scratch = Path(tempfile.mkdtemp(prefix="ramit-space-test-"))
    models = _write_models(scratch / "models")
    port = _free_port()
    (scratch / "tmp").mkdir()
    env = {
        **os.environ,
        **{variable: str(path) for variable, path in models.items()},
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_MODULES_CACHE": str(scratch / "modules"),
        "TMPDIR": str(scratch / "tmp"),  # examples, outputs and gradio's cache: removed with the scratch folder
        "GRADIO_TEMP_DIR": str(scratch / "tmp" / "gradio"),
        "PYTHONUNBUFFERED": "1",
        # idle OpenMP threads sleep instead of spinning: with the test process computing on the same 2 cores
        # between requests, spinning threads made small restorations up to 50x slower here
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    log = scratch / "app.log"
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOT.format(space=str(SPACE_DIR), app=str(SPACE_DIR / "app.py"))],
            cwd=SPACE_DIR,
            env=env,
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    atexit.register(_stop, process, scratch)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the Space exited with status {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Space did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    return SpaceServer(url=url, models=models, scratch=scratch, log=log)


def _stop(process: subprocess.Popen, scratch: Path) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(scratch, ignore_errors=True)


def load_space_app(examples_dir: Path):
    """The app module itself, imported in this process (it builds the page, writing its examples to
    `examples_dir`, and launches nothing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ramit_demo_app", SPACE_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    previous = os.environ.get("RAMIT_EXAMPLES_DIR")
    os.environ["RAMIT_EXAMPLES_DIR"] = str(examples_dir)
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            del os.environ["RAMIT_EXAMPLES_DIR"]
        else:
            os.environ["RAMIT_EXAMPLES_DIR"] = previous
    return module
