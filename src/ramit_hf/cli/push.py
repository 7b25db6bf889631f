"""`ramit push`: publish RAMiT models to the Hugging Face Hub with their model cards (or write them locally)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..configuration_ramit import TASKS
from .common import fail, write_errors


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "push",
        help="upload models (original .pth checkpoints, converted, or model folders) to the Hub with model cards",
        description="Publish RAMiT models to the Hugging Face Hub: config, model.safetensors, preprocessor config, "
        "the modeling and pipeline code (so pipeline('image-restoration', model=repo, trust_remote_code=True) works "
        "without ramit_hf) "
        "and a model card generated from the evaluation results. Original checkpoints go to "
        "<namespace>/<preset> (e.g. ramit-hf/ramit1-sr-x2), model folders to <namespace>/<folder name>. "
        "The token and the connection are checked before anything is converted or sent.",
    )
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="original .pth checkpoints or model folders")
    parser.add_argument(
        "--released",
        metavar="DIR",
        help="also push every checkpoint of the original release found in DIR (RAMiT-1_X2.pth, RAMiT_CDN.pth, ...)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--repo-id", help="repository id (namespace/name); only with a single source")
    target.add_argument("--namespace", help="user or organisation of the default repository ids (default: ramit-hf)")
    parser.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="folder of `ramit evaluate` JSON files whose numbers go into the cards (default: ./results)",
    )
    parser.add_argument("--task", choices=TASKS, help="task of an original checkpoint whose name does not tell it")
    parser.add_argument(
        "--dry-run",
        metavar="DIR",
        help="upload nothing; write exactly what would be uploaded to DIR (several sources: DIR/<repository name>)",
    )
    parser.add_argument("--overwrite", action="store_true", help="with --dry-run: replace existing non-empty folders")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also add onnx/model.onnx and onnx/model_fp16.onnx (verified exports) and their usage to the card",
    )
    parser.add_argument("--private", action="store_true", help="create the repositories as private")
    parser.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--commit-message", help="message of the upload commit")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..convert import CheckpointError
    from ..hub import HubError, prepare_model, push_to_hub
    from ..inference import ModelLoadError

    sources = _sources(args)
    if isinstance(sources, str):
        return fail("push", sources)
    problem = _check_destination(args, len(sources))
    if problem is not None:
        return fail("push", problem)

    for source in sources:
        try:
            prepared = prepare_model(source, task=args.task)
            dry_run = None
            if args.dry_run is not None:
                # one source: DIR is the repository's folder; several: a folder per repository inside DIR
                dry_run = Path(args.dry_run) if len(sources) == 1 else Path(args.dry_run) / prepared.name
            result = push_to_hub(
                prepared,
                repo_id=args.repo_id,
                namespace=args.namespace,
                results_dir=args.results,
                dry_run=dry_run,
                overwrite=args.overwrite,
                token=args.token,
                private=args.private,
                commit_message=args.commit_message,
                onnx=args.onnx,
            )
        except (
            HubError,
            CheckpointError,
            ModelLoadError,
            ValueError,
            FileNotFoundError,
            FileExistsError,
            ImportError,
            RuntimeError,
        ) as error:
            return fail("push", f"{source}: {error}")
        except write_errors() as error:  # e.g. an upload that failed on the way, a full disk for --dry-run
            return fail("push", f"{source}: {type(error).__name__}: {error}")
        cards = f"card with {result.num_results} result{'s' if result.num_results != 1 else ''}"
        if result.folder is not None:
            print(f"{source} -> {result.folder} (dry run for {result.repo_id}; {cards})")
        else:
            print(f"{source} -> https://huggingface.co/{result.repo_id} ({cards}; {result.commit_url})")
    return 0


def _sources(args: argparse.Namespace) -> list[Path] | str:
    """The models to push, or the problem with them."""
    from ..hub import released_checkpoints

    sources = [Path(source) for source in args.sources]
    if args.released:
        try:
            sources += released_checkpoints(args.released)
        except FileNotFoundError as error:
            return str(error)
    if not sources:
        return "nothing to push: give checkpoints or model folders, or --released DIR"
    if args.repo_id and len(sources) > 1:
        return f"--repo-id names one repository but {len(sources)} models were given; use --namespace"
    return sources


def _check_destination(args: argparse.Namespace, count: int) -> str | None:
    """Repository names and, unless a dry run, the Hub login, checked before any model is converted."""
    from ..hub import HubError, check_hub_access, repo_id_for, validate_repo_id

    try:
        if args.repo_id:
            validate_repo_id(args.repo_id)
        elif args.namespace:
            repo_id_for("x", args.namespace)
    except ValueError as error:
        return str(error)
    if not Path(args.results).is_dir():
        print(f"ramit push: warning: no results folder {args.results}: the cards will have no results", file=sys.stderr)
    if args.dry_run is None:
        try:
            user = check_hub_access(args.token)
        except HubError as error:
            return str(error)
        print(f"logged in to the Hugging Face Hub as {user}")
    return None
