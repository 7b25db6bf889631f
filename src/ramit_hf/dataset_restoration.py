"""Restore the images of a 🤗 dataset: a dataset in (a Hub id, a local folder, parquet files), a dataset out.

`restore_dataset(model, dataset, column="image")` restores one image column of an in-memory `datasets.Dataset`
and returns a new one. `ramit restore --dataset ID_OR_PATH -o OUT` (`run_dataset`) does the same at scale and writes
a dataset folder that `datasets.load_dataset(OUT)` (or `load_dataset("parquet", data_dir=OUT)`) reads:

    OUT/README.md                                   dataset card: source, model, revision, computation, dtype
    OUT/data/<split>-<i>-of-<n>.parquet             the shards, in the input's row order
    OUT/failures-<split>.jsonl                      rows that could not be restored (row, shard, error)
    OUT/.ramit/<split>/run.json, shard-<i>.json     what the run was asked, and the record of each finished shard

Every column is kept; the image column is replaced by the restored images (or they go to a new column), encoded as
PNG in the dataset's own `Image` feature (lossless; 16-bit images stay 16-bit, L stays L, alpha is kept). Each
image is restored exactly as `ramit restore` restores the same image file.

Shards are a function of the input alone: runs of `shard_rows` rows of a map-style dataset, or the input's own files
for a streamed one (`--streaming`, read as a stream, never stored whole). Under torchrun / `accelerate launch`, on
one or several machines, rank r of W takes shards r, r + W, ... Each shard is written to a hidden temporary name
and renamed (`ramit_hf.atomic`), then recorded; `--resume`, with any number of ranks, restores only the shards not
recorded, and the result is the same as that of an uninterrupted run. The shards need no merge: the data files are
the output.

An image that cannot be decoded, or is above the pixel budget, fails its row, not the run: the row is named in the
report and either kept as it was (`on_error="keep"`; a new output column holds null there) or dropped ("drop").
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ON_ERROR = ("keep", "drop")
SHARD_ROWS = 1000
ROW_GROUP = 100  # rows per parquet row group, restored and written together
RECORDS = ".ramit"


# ----------------------------------------------------------------------------------------------
# restoring rows


@dataclass
class RowFailure:
    """A row that could not be restored: its index in the split (in its shard for a streamed input, where the
    index in the split is unknown: then `row` is None), its shard, and why."""

    split: str
    shard: int
    row_in_shard: int
    row: int | None
    error: str


def _restored_path(path: str | None) -> str | None:
    """The file name a restored image carries in the Image feature: the input's, as a .png."""
    if not path:
        return None
    from .cli.restore import output_name

    return output_name(Path(path), "16").name


def _image_files(values: list, order: list[int], folder: Path) -> Iterator[str]:
    """The image cells ({"bytes", "path"}) at `order` -> files the pipeline reads: each is written to `folder` and
    removed when the next is asked for (the pipeline has read it by then); a cell without bytes names a file."""
    for index in order:
        value = values[index]
        if value.get("bytes") is None:
            yield value["path"]
            continue
        file = folder / f"row-{index}"
        file.write_bytes(value["bytes"])
        try:
            yield str(file)
        finally:
            file.unlink(missing_ok=True)


def restore_table(
    pipe,
    table,
    column: str,
    output_column: str | None = None,
    on_error: str = "keep",
    split: str = "train",
    shard: int = 0,
    first_row: int | None = 0,
    shard_offset: int = 0,
    **restore_kwargs,
):
    """Restore the images of `column` in an Arrow table of a dataset -> (new table, [RowFailure]).

    `pipe` is an `ImageRestorationPipeline`; `restore_kwargs` go to `pipe.iter_outputs` (batch_size, tile_size,
    tile_overlap, bit_depth, max_pixels). Other columns are kept as they are; failed rows are kept (`output_column`
    null there) or dropped. For the report, `first_row` is the split index of the table's first row (None: unknown)
    and `shard_offset` its index in its shard.
    """
    import pyarrow as pa

    from .cli.restore import _message
    from .image_io import png_bytes

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    values = table.column(column).to_pylist()
    restored: list[Any] = [None] * len(values)
    failed: set[int] = set()
    failures: list[RowFailure] = []

    def fail(index: int, message: str) -> None:
        failed.add(index)
        row = None if first_row is None else first_row + index
        failures.append(RowFailure(split, shard, shard_offset + index, row, message))

    # an empty cell (no image) stays empty
    order = [i for i, value in enumerate(values) if value and (value.get("bytes") is not None or value.get("path"))]
    kwargs = {"output_type": "np", "bit_depth": "auto", **restore_kwargs}
    with tempfile.TemporaryDirectory(prefix="ramit-rows-") as folder:
        files = _image_files(values, order, Path(folder))
        for position, result in pipe.iter_outputs(files, return_errors=True, **kwargs):
            index = order[position]
            if isinstance(result, Exception):
                path_only = values[index].get("bytes") is None
                source = values[index]["path"] if path_only else str(Path(folder, f"row-{index}"))
                fail(index, _message(result, source))
            else:
                restored[index] = {"bytes": png_bytes(result), "path": _restored_path(values[index].get("path"))}
    image_type = table.schema.field(column).type
    if output_column is None or output_column == column:
        cells = [values[i] if i in failed else restored[i] for i in range(len(values))]
        position = table.schema.get_field_index(column)
        table = table.set_column(position, table.schema.field(column), pa.array(cells, type=image_type))
    else:
        table = table.append_column(pa.field(output_column, image_type), pa.array(restored, type=image_type))
    if on_error == "drop" and failed:
        table = table.filter(pa.array([i not in failed for i in range(len(values))]))
    return table, failures


def output_features(features, column: str, output_column: str | None):
    """The features of the restored dataset: those of the input, and the image feature for a new output column."""
    from datasets import Features

    features = Features(features.copy())
    if output_column not in (None, column):
        if output_column in features:
            raise ValueError(f"the dataset has a column {output_column!r} already; choose another --output-column")
        features[output_column] = features[column]
    return features


def _check_image_column(features, column: str) -> None:
    from datasets import Image

    if features is None:
        raise ValueError("the dataset does not say its features; an image column needs the Image feature")
    if column not in features:
        names = ", ".join(features)
        raise ValueError(f"no column {column!r} in the dataset (columns: {names}); name it with --image-column")
    if not isinstance(features[column], Image):
        raise ValueError(f"column {column!r} is {features[column]!r}, not an Image column")


def restore_dataset(
    model,
    dataset,
    column: str = "image",
    output_column: str | None = None,
    on_error: str = "keep",
    failures: list | None = None,
    **restore_kwargs,
):
    """Restore the images of `column` of a `datasets.Dataset` -> a new `Dataset`, every other column kept.

    `model`: a RAMiT model (restored in the precision and computation `inference.choose_compute` picks for its
    device) or an `ImageRestorationPipeline`. The restored images replace `column` or go to `output_column`, as
    PNG in the dataset's Image feature, equal to what `ramit restore` writes for the same image files. Rows that fail
    are kept (null in `output_column`) or dropped (`on_error="drop"`), and appended to `failures` as `RowFailure`s
    when a list is given. `restore_kwargs`: batch_size, tile_size (default "auto"), tile_overlap, bit_depth
    (default "auto": 16-bit images stay 16-bit), max_pixels.
    """
    from datasets import Dataset, Image

    _check_image_column(dataset.features, column)
    features = output_features(dataset.features, column, output_column)
    pipe = _pipeline(model)
    table = dataset.cast_column(column, Image(decode=False)).with_format("arrow")[:]
    table, failed = restore_table(pipe, table, column, output_column, on_error, **restore_kwargs)
    if failures is not None:
        failures.extend(failed)
    return Dataset(table.replace_schema_metadata(features.arrow_schema.metadata))


def _pipeline(model):
    from .pipeline_image_restoration import ImageRestorationPipeline

    if isinstance(model, ImageRestorationPipeline):
        return model
    return ImageRestorationPipeline(model=model, device=model.device, precision="auto")


# ----------------------------------------------------------------------------------------------
# the input, in shards


@dataclass
class Source:
    """A split of a dataset, its image column not decoded, in shards that depend on the input alone."""

    dataset: Any  # datasets.Dataset, or IterableDataset when streamed
    features: Any
    num_shards: int
    num_rows: int | None  # None when streamed
    shard_rows: int | None  # rows per shard of a map-style dataset (the last may have fewer)

    def rows(self, shard: int) -> int | None:
        if self.num_rows is None or self.shard_rows is None:
            return None
        return min(self.num_rows, (shard + 1) * self.shard_rows) - shard * self.shard_rows

    def first_row(self, shard: int) -> int | None:
        return None if self.shard_rows is None else shard * self.shard_rows

    def table(self, shard: int):
        """The rows of `shard` as an Arrow table (image cells as {"bytes", "path"})."""
        import pyarrow as pa

        if self.shard_rows is not None:
            start = shard * self.shard_rows
            return self.dataset.with_format("arrow")[start : start + (self.rows(shard) or 0)]
        part = self.dataset.shard(self.num_shards, shard, contiguous=True).with_format("arrow")
        tables = list(part.iter(batch_size=256))
        if not tables:
            return self.features.arrow_schema.empty_table()
        return pa.concat_tables(tables)


def open_source(
    spec: str,
    column: str,
    config: str | None = None,
    split: str = "train",
    streaming: bool = False,
    shard_rows: int = SHARD_ROWS,
) -> Source:
    """A Hub id, a local dataset folder (files `load_dataset` reads, or a `save_to_disk` folder) or parquet files
    (a path or a glob) -> the `Source` of `split`. Map-style: shards of `shard_rows` rows; streamed: the input's
    own files (a `save_to_disk` folder streamed: shards of `shard_rows` rows)."""
    from datasets import Dataset, DatasetDict, Image, load_dataset, load_from_disk

    path = Path(spec).expanduser()
    saved = path.is_dir() and any((path / name).exists() for name in ("state.json", "dataset_dict.json"))
    if saved:
        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise ValueError(f"{spec} has no split {split!r} (splits: {', '.join(loaded)})")
            loaded = loaded[split]
        assert isinstance(loaded, Dataset)
        dataset: Any = loaded
        if streaming:
            dataset = loaded.to_iterable_dataset(num_shards=max(1, -(-len(loaded) // shard_rows)))
    elif path.is_file() or (path.suffix == ".parquet" and not path.is_dir()):
        dataset = load_dataset("parquet", data_files={split: spec}, split=split, streaming=streaming)
    else:
        dataset = load_dataset(spec, name=config, split=split, streaming=streaming)
    _check_image_column(dataset.features, column)
    features = dataset.features
    dataset = dataset.cast_column(column, Image(decode=False))
    if streaming:
        return Source(dataset, features, dataset.num_shards, None, None)
    num_rows = len(dataset)
    return Source(dataset, features, max(1, -(-num_rows // shard_rows)), num_rows, shard_rows)


def shard_file(split: str, shard: int, num_shards: int) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.parquet"


def _records(out: Path, split: str) -> Path:
    return out / RECORDS / split


def _record_file(out: Path, split: str, shard: int) -> Path:
    return _records(out, split) / f"shard-{shard:05d}.json"


def recorded_shards(out: Path, split: str) -> dict[int, dict]:
    """The finished shards of `split` in the output folder `out`: shard -> its record."""
    folder = _records(out, split)
    records = {}
    for file in sorted(folder.glob("shard-*.json")) if folder.is_dir() else []:
        record = json.loads(file.read_text())
        records[record["shard"]] = record
    return records


def write_shard(out: Path, split: str, shard: int, num_shards: int, features, chunks, record) -> None:
    """Write one shard's parquet file from `chunks` (Arrow tables, one row group each, restored as the file is
    written), then its record (`record()`, a dict), each atomically: a shard is recorded only once its file is
    complete, and one written but not recorded (a run killed in between) is written again, identically, on resume."""
    import pyarrow.parquet as pq

    from .atomic import write_file_atomic, write_text_atomic

    schema = features.arrow_schema

    def write(file) -> None:
        with pq.ParquetWriter(file, schema) as writer:
            for chunk in chunks:
                writer.write_table(chunk.cast(schema))

    write_file_atomic(out / "data" / shard_file(split, shard, num_shards), write, overwrite=True)
    write_text_atomic(_record_file(out, split, shard), json.dumps(record(), indent=1) + "\n", overwrite=True)


# ----------------------------------------------------------------------------------------------
# the command: `ramit restore --dataset ...`


def add_dataset_arguments(parser) -> None:
    group = parser.add_argument_group(
        "datasets", "restore a 🤗 dataset instead of files (docs/datasets.md); -o is then the output dataset folder"
    )
    group.add_argument("--dataset", metavar="ID_OR_PATH", help="Hub id, local dataset folder, or parquet file(s)")
    group.add_argument("--config", help="the dataset's configuration (subset)")
    group.add_argument("--split", default="train", help="the split to restore (default: train)")
    group.add_argument("--image-column", default="image", help="the column of images to restore (default: image)")
    group.add_argument("--output-column", help="write the restored images to this new column (default: replace)")
    group.add_argument("--streaming", action="store_true", help="read the dataset as a stream (nothing stored whole)")
    group.add_argument(
        "--shard-rows",
        type=_positive,
        default=SHARD_ROWS,
        metavar="N",
        help=f"rows per output shard of a map-style dataset (default {SHARD_ROWS}); streamed: the input's files",
    )
    group.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="keep",
        help="a row whose image fails: keep it as it was (default; null in --output-column) or drop it",
    )
    group.add_argument("--push-to-hub", metavar="REPO", help="publish the restored dataset to this Hub repository")
    group.add_argument(
        "--push-dry-run", metavar="DIR", help="with --push-to-hub: upload nothing, write what would be uploaded to DIR"
    )
    group.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    group.add_argument("--token", help="Hugging Face token for --push-to-hub (default: HF_TOKEN or the saved login)")


def _positive(value: str) -> int:
    from .cli.common import positive_int

    return positive_int(value)


# what a resumed run must share with the first one for its shards to fit with the recorded ones
_RUN_KEYS = (
    "dataset",
    "config",
    "split",
    "image_column",
    "output_column",
    "streaming",
    "shard_rows",
    "num_shards",
    "num_rows",
    "on_error",
    "model",
    "runtime",
    "computation",
    "dtype",
    "bit_depth",
    "tile",
    "tile_overlap",
    "max_pixels",
)


def _run_settings(args, source: Source, pipe) -> dict:
    import ramit_hf

    model = pipe.model
    if pipe.compute is None:
        dtype, computation = str(model.dtype).removeprefix("torch."), "onnxruntime"
    else:
        dtype, computation = str(pipe.compute.dtype).removeprefix("torch."), pipe.compute.computation
    return {
        "dataset": args.dataset,
        "config": args.config,
        "split": args.split,
        "image_column": args.image_column,
        "output_column": args.output_column,
        "streaming": args.streaming,
        "shard_rows": source.shard_rows,
        "num_shards": source.num_shards,
        "num_rows": source.num_rows,
        "on_error": args.on_error,
        "model": args.model,
        "model_revision": _model_revision(args.model, model),
        "model_name": f"{model.config.variant or 'RAMiT'} {model.config.task or ''}".strip(),
        "upscale": model.config.upscale,
        "runtime": args.runtime,
        "computation": computation,
        "dtype": dtype,
        "compute": pipe.compute.describe() if pipe.compute is not None else f"{dtype}, ONNX Runtime",
        "bit_depth": args.bit_depth,
        "tile": args.tile,
        "tile_overlap": args.tile_overlap,
        "max_pixels": args.max_pixels,
        "features": source.features.to_dict(),
        "ramit_hf": ramit_hf.__version__,
    }


def _model_revision(spec: str, model) -> str:
    """The Hub commit of a model from the Hub; the SHA-256 of a local model's weight file."""
    import hashlib

    commit = getattr(model.config, "_commit_hash", None)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = next((path / name for name in ("model.safetensors", "model.onnx") if (path / name).is_file()), path)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return f"sha256:{digest.hexdigest()}"
    return commit or "unknown"


def _prepare_output(out: Path, settings: dict, resume: bool) -> None:
    """Record what this run does (rank 0); a resumed run must do what the first one did."""
    from .atomic import write_text_atomic

    run_file = _records(out, settings["split"]) / "run.json"
    started = run_file.exists() or any((out / "data").glob(f"{settings['split']}-*.parquet"))
    if started and not resume:
        raise ValueError(
            f"{out} already holds split {settings['split']!r} of a run; pass --resume to finish it, or choose "
            "another output folder"
        )
    if run_file.exists():
        first = json.loads(run_file.read_text())
        changed = [key for key in _RUN_KEYS if first.get(key) != settings.get(key)]
        if changed:
            differences = "; ".join(f"{key}: {first.get(key)!r} then, {settings.get(key)!r} now" for key in changed)
            raise ValueError(f"--resume must continue the run {out} began with the same settings ({differences})")
        return
    write_text_atomic(run_file, json.dumps(settings, indent=1) + "\n")


def _agree(fatal: str | None, world: int) -> str | None:
    """The first problem any process had (every process calls this: it is also a barrier)."""
    if world == 1:
        return fatal
    import torch.distributed as dist

    gathered: list = [None] * world
    dist.all_gather_object(gathered, fatal)
    return next((problem for problem in gathered if problem is not None), None)


def run_dataset(args) -> int:
    """`ramit restore --dataset ...`: see the module docstring and docs/datasets.md."""
    from .cli.common import fail
    from .cli.restore import _build_pipeline, _distributed_setup, _distributed_teardown, _gather

    problem = _check_arguments(args)
    if problem is not None:
        return fail("restore", problem)
    out = Path(args.output).expanduser()
    rank, world, local_rank = _distributed_setup()
    fatal, source, pipe = None, None, None
    # the first process of each machine reads (for a Hub dataset: downloads and prepares) the input before the others
    for turn in (0, 1):
        if (local_rank == 0) == (turn == 0):
            try:
                source = open_source(
                    args.dataset, args.image_column, args.config, args.split, args.streaming, args.shard_rows
                )
            except Exception as error:  # a missing dataset, a bad split or column, a network error, ...
                fatal = f"cannot read the dataset {args.dataset}: {type(error).__name__}: {error}"
        fatal = _agree(fatal, world)
        if fatal is not None:
            _distributed_teardown(world)
            return fail("restore", fatal) if rank == 0 else 2
    assert source is not None
    try:
        output_features(source.features, args.image_column, args.output_column)
        pipe = _build_pipeline(args, local_rank)
        settings = _run_settings(args, source, pipe)
        if rank == 0:
            _prepare_output(out, settings, args.resume)
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        fatal = str(error)
    fatal = _agree(fatal, world)
    if fatal is None:
        # every process must compute as the run began (e.g. --dtype auto on machines with and without bfloat16)
        first = json.loads((_records(out, args.split) / "run.json").read_text())
        if (first["dtype"], first["computation"]) != (settings["dtype"], settings["computation"]):
            fatal = (
                f"process {rank} would compute in {settings['dtype']}, {settings['computation']} computation, but the "
                f"run computes in {first['dtype']}, {first['computation']}: pass --dtype and --computation"
            )
        fatal = _agree(fatal, world)
    if fatal is not None:
        _distributed_teardown(world)
        return fail("restore", fatal) if rank == 0 else 2

    assert pipe is not None
    if not args.quiet and rank == 0:
        where = f"{world} processes" if world > 1 else f"{pipe.device}"
        shards = f"{source.num_shards} shard{'s' if source.num_shards != 1 else ''}"
        size = f"{source.num_rows:,} rows" if source.num_rows is not None else "streamed"
        print(f"model: {settings['model_name']}, {settings['compute']} on {where}")
        print(f"dataset: {args.dataset} [{args.split}], {size}, {shards} -> {out}{os.sep}")
    start = time.perf_counter()
    rows, failures = 0, []
    try:
        rows, failures = _restore_shards(pipe, source, out, args, settings, rank, world)
    except Exception as error:  # a full disk, an unreadable input file, ...: reported, and no process waits for ever
        fatal = f"process {rank}: {type(error).__name__}: {error}"
    elapsed = time.perf_counter() - start
    if world > 1:
        rows, failures, elapsed, fatal = _gather(rows, failures, elapsed, fatal)
    _distributed_teardown(world)
    if fatal is not None:
        return fail("restore", fatal) if rank == 0 else 2
    records = recorded_shards(out, args.split)
    failed = [failure for record in records.values() for failure in record["failures"]]
    if rank == 0:
        _finish(out, args, settings, records, failed, rows, elapsed)
        if args.push_to_hub:
            try:
                _publish(out, args)
            except Exception as error:  # the Hub's errors, a network error, an existing --push-dry-run folder
                return fail("restore", f"publishing to {args.push_to_hub}: {type(error).__name__}: {error}")
    return 1 if failed else 0


def _check_arguments(args) -> str | None:
    if args.inputs:
        return "give either image files (INPUT ...) or --dataset, not both"
    if args.overwrite or args.skip_existing:
        return "--overwrite and --skip-existing are for image files; a dataset run is continued with --resume"
    source, out = Path(args.dataset).expanduser().resolve(), Path(args.output).expanduser().resolve()
    if source.exists() and (out.is_relative_to(source) or source.is_relative_to(out)):
        return f"-o {args.output} and the dataset {args.dataset} overlap: the output would mix with its input"
    if args.push_dry_run and not args.push_to_hub:
        return "--push-dry-run needs --push-to-hub REPO (the repository it would go to)"
    if args.push_to_hub:
        from .hub import HubError, check_hub_access, validate_repo_id

        try:
            validate_repo_id(args.push_to_hub)
            if not args.push_dry_run and int(os.environ.get("RANK", "0")) == 0:
                check_hub_access(args.token)
        except (ValueError, HubError) as error:
            return str(error)
    return None


def _restore_shards(pipe, source: Source, out: Path, args, settings: dict, rank: int, world: int):
    """Restore the shards of this process (rank, rank + world, ...) that are not recorded -> (rows, failures)."""
    features = output_features(source.features, args.image_column, args.output_column)
    done = recorded_shards(out, args.split)
    mine = [shard for shard in range(rank, source.num_shards, world) if shard not in done]
    total = None if source.num_rows is None else sum(source.rows(shard) or 0 for shard in mine)
    prefix = f"[{rank}] " if world > 1 else ""
    kwargs = {
        "batch_size": args.batch_size,
        "tile_size": args.tile,
        "tile_overlap": args.tile_overlap,
        "max_pixels": args.max_pixels,
        "bit_depth": "auto" if args.bit_depth == "auto" else int(args.bit_depth),
    }
    rows, failures, start = 0, [], time.perf_counter()
    if not args.quiet and len(mine) < len(range(rank, source.num_shards, world)):
        skipped = len(range(rank, source.num_shards, world)) - len(mine)
        print(f"{prefix}{skipped} shard{'s' if skipped != 1 else ''} already restored", file=sys.stderr)
    for count, shard in enumerate(mine, 1):
        shard_start = time.perf_counter()
        table = source.table(shard)
        first = source.first_row(shard)
        failed: list[RowFailure] = []
        written: list[int] = []

        def restored_chunks(table=table, first=first, failed=failed, written=written, shard=shard):
            # a row group at a time, so that only one group of restored images is held in memory
            for start in range(0, table.num_rows, ROW_GROUP):
                chunk, chunk_failed = restore_table(
                    pipe,
                    table.slice(start, ROW_GROUP),
                    args.image_column,
                    args.output_column,
                    args.on_error,
                    split=args.split,
                    shard=shard,
                    first_row=None if first is None else first + start,
                    shard_offset=start,
                    **kwargs,
                )
                failed += chunk_failed
                written.append(chunk.num_rows)
                yield chunk

        def record(table=table, failed=failed, written=written, shard=shard, shard_start=shard_start) -> dict:
            return {
                "shard": shard,
                "file": f"data/{shard_file(args.split, shard, source.num_shards)}",
                "rows_in": table.num_rows,
                "rows_out": sum(written),
                "failures": [asdict(failure) for failure in failed],
                "seconds": round(time.perf_counter() - shard_start, 3),
            }

        write_shard(out, args.split, shard, source.num_shards, features, restored_chunks(), record)
        failures += [asdict(failure) for failure in failed]
        rows += table.num_rows
        if not args.quiet:
            elapsed = time.perf_counter() - start
            rate = rows / elapsed if elapsed > 0 else 0.0
            if total is not None:
                eta = (total - rows) / rate if rate > 0 else 0.0
                position = f"{rows:,}/{total:,} rows"
            else:
                eta = elapsed / count * (len(mine) - count)
                position = f"{rows:,} rows, shard {count}/{len(mine)}"
            print(
                f"{prefix}shard {shard + 1}/{source.num_shards}: {table.num_rows} rows, {len(failed)} failed; "
                f"{position}, {rate:.2f} rows/s, ETA {_duration(eta)}",
                file=sys.stderr,
                flush=True,
            )
    return rows, failures


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _finish(out: Path, args, settings: dict, records: dict, failed: list, rows: int, elapsed: float) -> None:
    """Rank 0, at the end: the failure report and the dataset card (once every shard is recorded), the summary."""
    from .atomic import write_text_atomic

    num_shards = settings["num_shards"]
    missing = sorted(set(range(num_shards)) - set(records))
    rate = f", {rows / elapsed:.2f} rows/s" if elapsed > 0 and rows else ""
    print(f"restored {rows:,} rows into {out}{os.sep} in {elapsed:.1f} s{rate}")
    if missing:
        print(f"{len(missing)} of {num_shards} shards are missing; rerun with --resume", file=sys.stderr)
        return
    report = out / f"failures-{args.split}.jsonl"
    write_text_atomic(report, "".join(json.dumps(failure) + "\n" for failure in failed), overwrite=True)
    write_text_atomic(out / "README.md", render_card(out), overwrite=True)
    total_in = sum(record["rows_in"] for record in records.values())
    total_out = sum(record["rows_out"] for record in records.values())
    shards = f"{num_shards} shard{'s' if num_shards != 1 else ''}"
    print(f"split {args.split}: {total_in:,} rows in {shards}, {total_out:,} written")
    if failed:
        action = "dropped" if settings["on_error"] == "drop" else "kept as they were"
        print(f"failed ({len(failed)} rows, {action}; listed in {report}):", file=sys.stderr)
        for failure in failed[:20]:
            if failure["row"] is not None:
                where = f"row {failure['row']} (shard {failure['shard']})"
            else:  # a streamed input: the row's index in the split is not known
                where = f"row {failure['row_in_shard']} of shard {failure['shard']}"
            print(f"  {where}: {failure['error']}", file=sys.stderr)
        if len(failed) > 20:
            print(f"  ... and {len(failed) - 20} more", file=sys.stderr)


def render_card(out: Path) -> str:
    """The dataset card (README.md) of an output folder, from the runs of all its splits."""
    runs = {}
    for run_file in sorted((out / RECORDS).glob("*/run.json")):
        settings = json.loads(run_file.read_text())
        runs[settings["split"]] = (settings, recorded_shards(out, settings["split"]))
    first = next(iter(runs.values()))[0]
    source = first["dataset"]
    on_hub = not Path(source).expanduser().exists()
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in runs:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    lines += ["tags:", "- image-restoration", "- ramit"]
    if on_hub:
        lines += ["source_datasets:", f"- {source}"]
    lines += ["---", ""]
    link = f"[{source}](https://huggingface.co/datasets/{source})" if on_hub else f"`{source}`"
    column = first["image_column"]
    target = f"column `{first['output_column']}`" if first["output_column"] else "its place"
    lines += [
        f"# {Path(source).name} restored with {first['model_name']}",
        "",
        f"The images of column `{column}` of {link}"
        + (f" (configuration `{first['config']}`)" if first["config"] else "")
        + f", restored with the RAMiT model `{first['model']}` ({first['model_name']}, x{first['upscale']}) and "
        f"written to {target}; every other column and the row order are kept. Made with "
        f"`ramit restore --dataset` (ramit_hf {first['ramit_hf']}).",
        "",
        "| split | rows in | rows out | failed rows | shards |",
        "|---|---:|---:|---:|---:|",
    ]
    for split, (settings, records) in runs.items():
        rows_in = sum(record["rows_in"] for record in records.values())
        rows_out = sum(record["rows_out"] for record in records.values())
        failed = sum(len(record["failures"]) for record in records.values())
        lines.append(f"| {split} | {rows_in:,} | {rows_out:,} | {failed:,} | {settings['num_shards']} |")
    tile = first["tile"] if first["tile"] != "auto" else "auto (images above 512x512 pixels in tiles of at most 512)"
    lines += [
        "",
        "## How the images were restored",
        "",
        f"- model: `{first['model']}`, revision `{first['model_revision']}`",
        f"- computation and dtype: {first['compute']}",
        f"- tiles: {tile}" + (f", overlap {first['tile_overlap']}" if first["tile_overlap"] is not None else ""),
        "- encoding: PNG (lossless) in the dataset's Image feature; 16-bit images stay 16-bit, gray stays gray, "
        "alpha is kept" + (" (every image written with 16 bits)" if first["bit_depth"] == "16" else ""),
        f"- rows whose image could not be restored: {'dropped' if first['on_error'] == 'drop' else 'kept as they were'}"
        + ("" if first["on_error"] == "drop" or not first["output_column"] else " (null in the output column)")
        + "; listed with their row and shard in `failures-<split>.jsonl`",
        "",
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'dataset = load_dataset("<this repository or folder>")',
        "```",
        "",
    ]
    return "\n".join(lines)


def published_files(out: Path) -> list[Path]:
    """What `--push-to-hub` uploads from an output folder: the card, the shards and the failure reports."""
    files = [out / "README.md", *sorted((out / "data").glob("*.parquet")), *sorted(out.glob("failures-*.jsonl"))]
    return [file for file in files if file.is_file()]


def _publish(out: Path, args) -> None:
    files = published_files(out)
    relative = [str(file.relative_to(out)) for file in files]
    if args.push_dry_run:
        from .atomic import atomic_folder

        with atomic_folder(args.push_dry_run) as staging:
            for file, name in zip(files, relative, strict=True):
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, staging / name)
        print(f"{out} -> {args.push_dry_run} (dry run for {args.push_to_hub}: {len(files)} files)")
        return
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    api.create_repo(args.push_to_hub, repo_type="dataset", private=args.private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=out,
        repo_id=args.push_to_hub,
        repo_type="dataset",
        allow_patterns=relative,
        commit_message="Restored with ramit restore --dataset",
    )
    print(f"{out} -> https://huggingface.co/datasets/{args.push_to_hub} ({commit.commit_url})")


__all__ = [
    "ON_ERROR",
    "RowFailure",
    "Source",
    "add_dataset_arguments",
    "open_source",
    "published_files",
    "recorded_shards",
    "render_card",
    "restore_dataset",
    "restore_table",
    "run_dataset",
]
