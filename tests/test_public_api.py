"""`ramit_hf.__all__` is what the README documents: every name imports, and the README's names are all listed."""

import re
import subprocess
import sys

from conftest import REPO_ROOT

import ramit_hf

README = (REPO_ROOT / "README.md").read_text()


def readme_api_names() -> set[str]:
    """The names of the README's "Python API" table, and those its examples import from `ramit_hf`."""
    section = README[README.index("## Python API") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = {name for row in rows for name in re.findall(r"`(\w+)`", row.split(" | ")[0])}
    imported = {
        name.strip()
        for names in re.findall(r"^from ramit_hf import \(?([\w, ]+)\)?$", README, re.M)
        for name in names.split(",")
    }
    return table | imported


def test_all_is_what_the_readme_documents():
    names = readme_api_names()
    assert {"load_model", "export_onnx", "convert_original_checkpoint", "imresize"} <= names
    assert sorted(ramit_hf.__all__) == sorted(names)
    assert len(set(ramit_hf.__all__)) == len(ramit_hf.__all__)


def test_every_listed_name_imports():
    # in a fresh process: the lazily loaded names (training, ONNX export) must load on their own
    script = "from ramit_hf import *\nimport ramit_hf\n" + "\n".join(
        f"assert {name} is getattr(ramit_hf, {name!r})" for name in ramit_hf.__all__
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_error_classes_keep_their_import_paths():
    from ramit_hf.errors import ModelLoadError
    from ramit_hf.export.onnxruntime import ModelLoadError as from_runtime
    from ramit_hf.inference import ModelLoadError as from_inference

    assert ramit_hf.ModelLoadError is ModelLoadError is from_inference is from_runtime
    assert issubclass(ModelLoadError, ValueError)


def package_imports(relative_path: str) -> set[str]:
    """The package modules a source file imports anywhere (module level or inside functions), as dotted names under
    `ramit_hf`."""
    import ast

    path = REPO_ROOT / "src" / "ramit_hf" / relative_path
    package = ["ramit_hf", *relative_path.split("/")[:-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ramit_hf"):
            found.add(node.module)
    return found


def test_export_and_inference_import_their_shared_names_without_a_cycle():
    assert package_imports("errors.py") == set()
    assert package_imports("export/metadata.py") == {"ramit_hf.configuration_ramit", "ramit_hf.errors"}
    runtime = package_imports("export/onnxruntime.py")
    assert "ramit_hf.inference" not in runtime and "ramit_hf.export.onnx" not in runtime
    assert not any(name.startswith("ramit_hf.export") for name in package_imports("inference.py"))
