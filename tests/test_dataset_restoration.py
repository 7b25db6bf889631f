"""Restoring a 🤗 dataset (`ramit restore --dataset`, `restore_dataset`): columns and row order kept, each image as
`ramit restore` restores its file, failures per row, resumable shards, 1 and 2 torchrun processes."""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import REPO_ROOT, small_config
from PIL import Image

from ramit_hf import RamitForImageRestoration
from ramit_hf.cli import main
from ramit_hf.cli.restore import output_name
from ramit_hf.convert import save_model_folder
from ramit_hf.image_io import save_image

ROWS, BROKEN, SHARD_ROWS = 12, 5, 4
# (mode, extension) of row i: 8-bit RGB, gray, RGBA and gray + alpha, 16-bit gray and RGB, JPEG
KINDS = [("RGB", ".png"), ("L", ".png"), ("RGBA", ".png"), ("LA", ".png"), ("I;16", ".png"), ("RGB16", ".png")]
KINDS.append(("RGB", ".jpg"))


def _image_bytes(index: int, rng, folder: Path) -> tuple[bytes, str]:
    mode, extension = KINDS[index % len(KINDS)]
    width, height = 24 + (16 * index) // (ROWS - 1), 20 + (12 * index) // (ROWS - 1)  # 24x20 .. 40x32
    name = f"img{index:02d}{extension}"
    if mode in ("I;16", "RGB16"):
        shape = (height, width) if mode == "I;16" else (height, width, 3)
        return save_image(rng.integers(0, 65536, shape, dtype=np.uint16), folder / name).read_bytes(), name
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if extension == ".jpg" else "PNG", quality=95)
    return buffer.getvalue(), name


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny RAMiT x2 (random weights) and a dataset of ROWS images of mixed sizes and modes with extra columns,
    row BROKEN a damaged PNG, as two parquet files (as a Hub dataset stores them)."""
    root = tmp_path_factory.mktemp("datasets")
    torch.manual_seed(0)
    model = str(save_model_folder(RamitForImageRestoration(small_config()), root / "tiny-x2"))
    rng = np.random.default_rng(0)
    images = [_image_bytes(index, rng, root / "files") for index in range(ROWS)]
    images[BROKEN] = (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "broken.png")
    features = datasets.Features(
        id=datasets.Value("int64"),
        image=datasets.Image(),
        caption=datasets.Value("string"),
        score=datasets.Value("float32"),
    )
    dataset = datasets.Dataset.from_dict(
        {
            "id": [100 + index for index in range(ROWS)],
            "image": [{"bytes": data, "path": name} for data, name in images],
            "caption": [f"photo {index}" for index in range(ROWS)],
            "score": [index / 4 for index in range(ROWS)],
        },
        features=features,
    )
    (root / "input" / "data").mkdir(parents=True)
    dataset.select(range(7)).to_parquet(root / "input" / "data" / "train-00000-of-00002.parquet")
    dataset.select(range(7, ROWS)).to_parquet(root / "input" / "data" / "train-00001-of-00002.parquet")
    return {"root": root, "model": model, "input": str(root / "input"), "dataset": dataset, "images": images}


def _restore(work, out, *extra) -> int:
    args = ["restore", "--dataset", work["input"], "--model", work["model"], "-o", str(out)]
    return main([*args, "--shard-rows", str(SHARD_ROWS), *map(str, extra)])


def _rows(out: Path) -> list[dict]:
    """The rows of an output folder, its shards in name order (image cells as stored: bytes and path)."""
    files = sorted((out / "data").glob("*.parquet"))
    return [row for file in files for row in pq.read_table(file).to_pylist()]


def _torchrun(*args, processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += ["-m", "ramit_hf.cli", "restore", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def reference(work, tmp_path_factory):
    """One uninterrupted single-process run (the broken row kept), published as a dry run."""
    out = work["root"] / "reference"
    dry = work["root"] / "upload"
    code = _restore(work, out, "--push-to-hub", "someone/restored", "--push-dry-run", dry)
    return {"out": out, "code": code, "rows": _rows(out), "dry": dry}


def test_columns_row_order_and_each_image_as_restore_writes_it(work, reference, tmp_path):
    assert reference["code"] == 1  # a row failed
    rows = reference["rows"]
    assert [row["id"] for row in rows] == [100 + index for index in range(ROWS)]
    assert [row["caption"] for row in rows] == [f"photo {index}" for index in range(ROWS)]
    assert [row["score"] for row in rows] == [index / 4 for index in range(ROWS)]
    assert list(rows[0]) == ["id", "image", "caption", "score"]
    # the single-image path: `ramit restore` on the same images as files
    files = tmp_path / "files"
    files.mkdir()
    for index, (data, name) in enumerate(work["images"]):
        (files / f"{index:02d}-{name}").write_bytes(data)
    assert main(["restore", str(files), "-o", str(tmp_path / "restored"), "--model", work["model"], "--quiet"]) == 1
    for index, (data, name) in enumerate(work["images"]):
        cell = rows[index]["image"]
        if index == BROKEN:
            assert cell == {"bytes": data, "path": name}  # kept as it was
            continue
        expected = tmp_path / "restored" / output_name(Path(f"{index:02d}-{name}"), "auto")
        assert cell["bytes"] == expected.read_bytes(), name
        assert cell["path"] == Path(name).with_suffix(".png").name
    # modes and bit depths kept, sizes doubled
    loaded = datasets.load_dataset("parquet", data_dir=str(reference["out"]), split="train")
    assert loaded.features == work["dataset"].features and loaded.num_rows == ROWS
    decoded = loaded.cast_column("image", datasets.Image(decode=False))
    for index in (0, 1, 2, 3, 4):
        image = Image.open(io.BytesIO(decoded[index]["image"]["bytes"]))
        source = Image.open(io.BytesIO(work["images"][index][0]))
        assert image.mode == source.mode and image.size == (2 * source.width, 2 * source.height)


def test_failures_are_reported_by_row_and_shard(reference):
    out = reference["out"]
    report = [json.loads(line) for line in (out / "failures-train.jsonl").read_text().splitlines()]
    assert len(report) == 1
    assert report[0]["row"] == BROKEN and report[0]["shard"] == BROKEN // SHARD_ROWS
    assert report[0]["row_in_shard"] == BROKEN % SHARD_ROWS
    assert "corrupt or truncated" in report[0]["error"]


def test_card_and_what_would_be_uploaded(work, reference):
    out, dry = reference["out"], reference["dry"]
    card = (out / "README.md").read_text()
    for text in ("path: data/train-*", work["model"], "revision `sha256:", "computation", "float32", "| train | 12"):
        assert text in card
    uploaded = sorted(str(path.relative_to(dry)) for path in dry.rglob("*") if path.is_file())
    shards = [f"data/train-0000{index}-of-00003.parquet" for index in range(3)]
    assert uploaded == ["README.md", *shards, "failures-train.jsonl"]  # no records, no temporaries
    assert datasets.load_dataset(str(dry), split="train")["id"] == [100 + index for index in range(ROWS)]


KILL_IN_SECOND_SHARD = textwrap.dedent(
    """
    import io, os, signal, sys
    import ramit_hf.atomic as atomic
    from ramit_hf.cli import main

    original, parquets = atomic.write_file_atomic, []

    def write_file_atomic(path, write, overwrite=False):
        if str(path).endswith(".parquet"):
            parquets.append(path)
            if len(parquets) == 2:  # the second shard: killed with half of its file written
                def half(file):
                    buffer = io.BytesIO()
                    write(buffer)
                    file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    file.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(path, half, overwrite)
        return original(path, write, overwrite)

    atomic.write_file_atomic = write_file_atomic
    sys.exit(main(sys.argv[1:]))
    """
)


def test_killed_run_resumed_with_another_process_count_equals_an_uninterrupted_one(work, reference):
    out = work["root"] / "killed"
    args = ["restore", "--dataset", work["input"], "--model", work["model"], "-o", str(out)]
    args += ["--shard-rows", str(SHARD_ROWS)]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_SECOND_SHARD, *args], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    # the first shard is in place and recorded; of the second, only a hidden temporary file
    visible = sorted(path.name for path in (out / "data").iterdir() if not path.name.startswith("."))
    assert visible == ["train-00000-of-00003.parquet"]
    assert sorted(json.loads(p.read_text())["shard"] for p in (out / ".ramit" / "train").glob("shard-*")) == [0]
    assert not (out / "README.md").exists()

    resumed = _torchrun(*args[1:], "--resume")
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # the broken row
    assert "[0] shard" in resumed.stderr and "[1] shard" in resumed.stderr
    assert "1 shard already restored" in resumed.stderr
    assert not [path for path in (out / "data").iterdir() if path.name.startswith(".")]  # nothing half-written
    for name in ("train-00000-of-00003.parquet", "train-00001-of-00003.parquet", "train-00002-of-00003.parquet"):
        assert (out / "data" / name).read_bytes() == (reference["out"] / "data" / name).read_bytes()
    assert (out / "failures-train.jsonl").read_text() == (reference["out"] / "failures-train.jsonl").read_text()


def test_two_processes_drop_failed_rows_into_a_new_column(work, reference):
    out = work["root"] / "dropped"
    result = _torchrun(
        "--dataset", work["input"], "--model", work["model"], "-o", out, "--shard-rows", SHARD_ROWS,
        "--on-error", "drop", "--output-column", "restored",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 processes" in result.stdout and "row 5 (shard 1)" in result.stderr
    rows = _rows(out)
    kept = [index for index in range(ROWS) if index != BROKEN]
    assert [row["id"] for row in rows] == [100 + index for index in kept]
    for row, index in zip(rows, kept, strict=True):
        assert row["image"]["bytes"] == work["images"][index][0]  # the input column as it was
        assert row["restored"] == reference["rows"][index]["image"]
    loaded = datasets.load_dataset(str(out), split="train")
    assert loaded.features["restored"] == datasets.Image() and loaded.num_rows == ROWS - 1


def test_a_streamed_dataset_is_restored_by_its_files(work, reference, monkeypatch):
    from ramit_hf import dataset_restoration

    monkeypatch.setattr(dataset_restoration, "ROW_GROUP", 3)  # shards of 7 and 5 rows written in row groups of 3
    out = work["root"] / "streamed"
    assert _restore(work, out, "--streaming") == 1
    assert sorted(path.name for path in (out / "data").glob("*.parquet")) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert _rows(out) == reference["rows"]
    report = [json.loads(line) for line in (out / "failures-train.jsonl").read_text().splitlines()]
    assert [(failure["shard"], failure["row_in_shard"], failure["row"]) for failure in report] == [(0, BROKEN, None)]
    assert pq.ParquetFile(out / "data" / "train-00000-of-00002.parquet").num_row_groups == 3


def test_restore_dataset_function(work, reference):
    from ramit_hf import load_model
    from ramit_hf.dataset_restoration import restore_dataset

    failures: list = []
    restored = restore_dataset(load_model(work["model"]), work["dataset"], failures=failures)
    assert restored.features == work["dataset"].features
    cells = restored.cast_column("image", datasets.Image(decode=False))["image"]
    assert cells == [row["image"] for row in reference["rows"]]
    assert [failure.row for failure in failures] == [BROKEN]


def test_a_rerun_needs_resume_and_the_same_settings(work, reference, capsys):
    assert _restore(work, Path(work["input"]) / "restored") == 2
    assert "overlap" in capsys.readouterr().err
    assert _restore(work, reference["out"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert _restore(work, reference["out"], "--resume", "--on-error", "drop") == 2
    assert "on_error: 'keep' then, 'drop' now" in capsys.readouterr().err
    assert _restore(work, reference["out"], "--resume") == 1  # nothing left to do; the failed row still counts
    assert "3 shards already restored" in capsys.readouterr().err


def test_over_budget_images_are_failed_rows_and_can_be_dropped(work):
    from ramit_hf import load_model, restore_dataset

    failures: list = []
    restored = restore_dataset(
        load_model(work["model"]), work["dataset"], on_error="drop", failures=failures, max_pixels=1000
    )
    images = [data for index, (data, _) in enumerate(work["images"]) if index != BROKEN]
    sizes = [Image.open(io.BytesIO(data)).size for data in images]
    over = [index + (index >= BROKEN) for index, (width, height) in enumerate(sizes) if width * height > 1000]
    assert over == [9, 10, 11]
    assert [failure.row for failure in failures] == sorted([BROKEN, *over])
    assert all("pixel budget" in failure.error for failure in failures if failure.row in over)
    assert restored["id"] == [100 + index for index in range(ROWS) if index not in (BROKEN, *over)]
