"""`ramit export`, `ramit restore --runtime onnxruntime` against the PyTorch command, `ramit push --onnx` and the
card's ONNX Runtime snippet run without torch."""

import re
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO_ROOT, checkpoint, shared_path
from PIL import Image

from ramit_hf.cli import main
from ramit_hf.export.onnx import read_metadata

SLIM_X2 = "RAMiT-slimSR_X2.pth"


@pytest.fixture(scope="module")
def slim_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "slim-x2.onnx"
    assert main(["export", str(checkpoint(SLIM_X2)), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """1x1, 1x500, 37x53 and a 280x200 image (tiled by --tile 128 below), cut from Set14 (width x height)."""
    folder = tmp_path_factory.mktemp("images")
    barbara = Image.open(shared_path("testsets", "Set14", "HR", "barbara.png")).convert("RGB")
    for width, height in ((1, 1), (500, 1), (53, 37), (280, 200)):
        barbara.crop((10, 20, 10 + width, 20 + height)).save(folder / f"{width}x{height}.png")
    return folder


def test_export_prints_what_it_verified(slim_onnx, capsys):
    metadata = read_metadata(slim_onnx)
    assert metadata["preset"] == "ramit-slimsr-x2" and metadata["scale"] == "2"
    other = slim_onnx.with_name("again.onnx")
    assert main(["export", str(checkpoint(SLIM_X2)), "-o", str(other), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert re.search(
        r"RAMiT-slimSR sr-x2, float32, opset 18, \d+\.\d MB\); ONNX Runtime matches PyTorch at 53x37 "
        r"to \d\.\de-0\d \(tolerance 0\.0001\)",
        printed,
    ), printed
    assert read_metadata(other)["opset"] == "18"


def test_onnx_runtime_restores_like_pytorch(slim_onnx, images, tmp_path, capsys):
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    torch_cli = [
        "restore",
        str(images),
        "-o",
        str(torch_out),
        "--model",
        str(checkpoint(SLIM_X2)),
        "--dtype",
        "float32",
        "--tile",
        "128",
    ]
    assert main([*torch_cli, "--quiet"]) == 0
    onnx_cli = ["restore", str(images), "-o", str(onnx_out), "--model", str(slim_onnx), "--runtime", "onnxruntime"]
    code = main([*onnx_cli, "--tile", "128"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "model: RAMiT-slimSR sr-x2 (581,008 parameters), float32 on cpu" in printed
    for name in ("1x1.png", "500x1.png", "53x37.png", "280x200.png"):
        expected = np.asarray(Image.open(torch_out / name)).astype(int)
        restored = np.asarray(Image.open(onnx_out / name)).astype(int)
        assert restored.shape == expected.shape
        assert np.abs(restored - expected).max() <= 1, name  # one 8-bit level


def _assert_fails(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_bad_exports_leave_nothing(tmp_path, capsys):
    target = tmp_path / "out.onnx"
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    _assert_fails(
        ["export", str(bert), "-o", str(target)], "is not a RAMiT model (its config.json has model_type", capsys
    )
    _assert_fails(["export", str(tmp_path / "none.pth"), "-o", str(target)], "model not found", capsys)
    _assert_fails(["export", str(checkpoint(SLIM_X2)), "-o", str(tmp_path / "x.onnxx")], "must be an .onnx", capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert"]
    target.write_bytes(b"keep")
    _assert_fails(["export", str(checkpoint(SLIM_X2)), "-o", str(target)], "exists (pass --overwrite", capsys)
    assert target.read_bytes() == b"keep"


def test_bad_onnx_restores_leave_nothing(slim_onnx, images, tmp_path, capsys):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    save(helper.make_model(graph), tmp_path / "foreign.onnx")
    out = tmp_path / "out"
    image = str(images / "53x37.png")
    restore = ["restore", image, "-o", str(out), "--runtime", "onnxruntime", "--model"]
    _assert_fails(
        [*restore, str(tmp_path / "foreign.onnx")], "foreign.onnx is an ONNX file without ramit_hf metadata", capsys
    )
    _assert_fails([*restore, str(checkpoint(SLIM_X2))], "runtime 'onnxruntime' needs an .onnx file", capsys)
    _assert_fails(
        [*restore, str(slim_onnx), "--dtype", "float16"], "is a float32 graph and cannot run in float16", capsys
    )
    _assert_fails([*restore, str(slim_onnx), "--device", "cuda"], "takes its inputs on the CPU, not cuda", capsys)
    assert not out.exists()
    out.mkdir()
    (out / "53x37.png").write_bytes(b"keep")
    assert main([*restore, str(slim_onnx)]) == 1
    assert "exists (pass --overwrite to replace it)" in capsys.readouterr().err
    assert (out / "53x37.png").read_bytes() == b"keep"


def test_without_onnxruntime_the_commands_say_how_to_install_it(slim_onnx, images, tmp_path):
    # a fresh interpreter in which `import onnxruntime` fails (and find_spec finds nothing), as without the extra
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["onnxruntime"] = None
        from ramit_hf.cli import main
        main(["restore", {str(images / "1x1.png")!r}, "-o", {str(tmp_path / "out")!r}, "--runtime", "onnxruntime",
              "--model", {str(slim_onnx)!r}])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "ONNX Runtime is not installed; install it with `pip install ramit-hf[onnx]`" in result.stderr
    export = script.split("from ramit_hf.cli")[0] + textwrap.dedent(
        f"""
        from ramit_hf.cli import main
        main(["export", {str(checkpoint(SLIM_X2))!r}, "-o", {str(tmp_path / "m.onnx")!r}])
        """
    )
    result = subprocess.run([sys.executable, "-c", export], capture_output=True, text=True, timeout=300)
    assert "ramit export: error: ONNX Runtime is not installed" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.onnx").exists()


# The card snippet runs where only numpy, Pillow, onnxruntime and huggingface_hub are importable.
BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "transformers", "ramit_hf"):
                raise ImportError(name + " must not be needed")
    sys.meta_path.insert(0, Block())
    """
)


def test_push_onnx_and_the_card_snippet_without_torch(tmp_path, capsys):
    folder = tmp_path / "repo"
    source = checkpoint("RAMiT-slimLLE_LLE.pth")
    assert main(["push", str(source), "--dry-run", str(folder), "--onnx", "--results", str(tmp_path)]) == 0
    capsys.readouterr()
    for name, dtype in (("model.onnx", "float32"), ("model_fp16.onnx", "float16")):
        metadata = read_metadata(folder / "onnx" / name)
        assert metadata["dtype"] == dtype and metadata["preset"] == "ramit-slimlle" and metadata["task"] == "lle"
    card = (folder / "README.md").read_text()
    assert "### ONNX" in card and "onnx" in card.split("---")[1]  # the section and the tag
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", card, re.S) if "onnxruntime" in block]

    # a Hub cache holding the repository's ONNX file, so hf_hub_download finds it offline, as written
    repo = tmp_path / "cache" / "models--ramit-hf--ramit-slimlle"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40) / "onnx").mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "onnx" / "model.onnx").symlink_to(folder / "onnx" / "model.onnx")
    dark = Image.open(shared_path("testsets", "Set5", "HR", "bird.png")).convert("RGB").crop((0, 0, 45, 38))
    dark = Image.fromarray((np.asarray(dark) * 0.3).astype(np.uint8))
    dark.save(tmp_path / "dark.png")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + snippet + "\nassert 'torch' not in sys.modules"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # the same as the PyTorch model through the restoration path (symmetric padding) on that image
    import torch

    from ramit_hf.inference import load_model, restore_tensor

    pixels = torch.from_numpy(np.asarray(dark, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    expected = restore_tensor(load_model(source), pixels)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    restored = np.asarray(Image.open(tmp_path / "restored.png")).astype(int)
    assert restored.shape == (38, 45, 3)
    assert np.abs(restored - np.round(expected * 255)).max() <= 1


def test_the_readmes_onnx_commands_run(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "ramit export" in b)
    (tmp_path / "shared").symlink_to(shared_path())
    work = tmp_path / "work"
    work.mkdir()
    for line in block.splitlines():
        if line.startswith("ramit "):
            args = shlex.split(line.split("#")[0])
            result = subprocess.run(
                [sys.executable, "-m", "ramit_hf.cli", *args[1:]], cwd=work, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, (args, result.stderr[-3000:])
    assert Image.open(work / "outputs" / "birdx2.png").size == (288, 288)


def test_an_opset_that_cannot_hold_the_graph_is_one_line(tmp_path, capfd, monkeypatch):
    output = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint(SLIM_X2)), "-o", str(output), "--opset", "5"]) == 2
    err = capfd.readouterr().err
    assert "opset 5 cannot hold RAMiT's graph: choose one from 14" in err and len(err) < 400
    # where the exporter itself fails, its dump of the graph (megabytes, written by C++) is not printed either
    from ramit_hf.export import onnx as onnx_export

    monkeypatch.setattr(onnx_export, "MIN_OPSET", 7)
    assert main(["export", str(checkpoint(SLIM_X2)), "-o", str(output), "--opset", "9"]) == 2
    err = capfd.readouterr().err
    assert "the ONNX export failed at opset 9" in err and len(err) < 1000, err[:2000]
    assert not output.exists()
