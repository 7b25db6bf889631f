"""Publishing (`push_to_hub`): a folder holding the config, `model.safetensors`, the preprocessor config, the modeling,
processing and pipeline code (`auto_map` and `custom_pipelines` in the config, so
`pipeline("image-restoration", model=repo_id, trust_remote_code=True)` works without `ramit_hf`) and the card,
uploaded in one commit with `huggingface_hub`. `dry_run=DIR` writes that very folder locally instead. The token and
the connection are checked before anything is converted or sent, and local folders are written atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_folder, check_folder_free
from .cards import CardInfo, load_results, render_model_card
from .repos import (
    RELEASED_CHECKPOINTS,
    HubError,
    original_checkpoint_name,
    preset_of,
    repo_id_for,
    validate_repo_id,
)


@dataclass
class PreparedModel:
    """A model ready to publish: the model, the repository name it goes to by default, and its card's inputs."""

    model: object
    name: str
    checkpoint_name: str | None
    result_ids: set[str]


def prepare_model(source: str | os.PathLike, task: str | None = None) -> PreparedModel:
    """Convert an original `.pth` checkpoint or load a model folder (e.g. one `ramit train` wrote).

    An original checkpoint goes to the repository named after its preset (`RAMiT-1_X2.pth` -> `ramit1-sr-x2`); a
    folder to one named after the folder. Raises `ramit_hf.CheckpointError` / `ModelLoadError` (ValueErrors) or
    FileNotFoundError naming the source.
    """
    from ..convert import convert_original_checkpoint
    from ..inference import load_model

    path = Path(source)
    if path.suffix.lower() in (".pth", ".pt") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        model = convert_original_checkpoint(path, task=task)
        preset = preset_of(model.config)
        if preset is None:  # convert only builds released settings, but keep the invariant explicit
            raise ValueError(f"{path} holds {model.config.variant} {model.config.task}, which has no preset")
        checkpoint = original_checkpoint_name(preset)
        return PreparedModel(model, preset, checkpoint, {checkpoint, path.stem, preset})
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path} (give an original .pth checkpoint or a model folder)")
    model = load_model(path)
    if task is not None and model.config.task != task:
        raise ValueError(f"{path} holds a {model.config.task} model, not {task}")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.resolve().name).strip(".-") or "ramit-model"
    return PreparedModel(model, name, None, {path.resolve().name, name})


def write_model_folder(
    model, folder: str | os.PathLike, card: str, overwrite: bool = False, onnx: bool = False
) -> Path:
    """Write everything a Hub repository of `model` holds into `folder`, atomically.

    Files: `config.json` (with `auto_map` and `custom_pipelines`), `model.safetensors`, `preprocessor_config.json`,
    the code they name (`configuration_ramit.py`, `modeling_ramit.py`, `image_processing_ramit.py`,
    `pipeline_image_restoration.py` and the files it imports), `README.md` (`card`) and with `onnx` the verified
    ONNX exports in `onnx/` (`ramit_hf.export.hub.write_onnx_files`). The folder is assembled
    beside its destination and renamed into place (`ramit_hf.atomic.atomic_folder`); an existing non-empty folder
    is replaced only with `overwrite`.
    """
    from ..convert import processor_for
    from ..pipeline_image_restoration import ImageRestorationPipeline

    with atomic_folder(folder, overwrite=overwrite) as staging:
        pipe = ImageRestorationPipeline(model=model, image_processor=processor_for(model.config))
        # the pipeline writes the model (with auto_map), its processor, and its own code plus custom_pipelines
        pipe.save_pretrained(staging)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if onnx:
            from ..export.hub import write_onnx_files

            write_onnx_files(model, staging)
    return Path(folder)


def check_hub_access(token: str | None = None) -> str:
    """The user name `token` (default: the saved login or `HF_TOKEN`) belongs to; HubError when there is no token,
    the Hub is unreachable (or `HF_HUB_OFFLINE` is set) or it rejects the token. Sends nothing but the check."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = token or get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN or pass --token "
            "(or write the files locally with --dry-run DIR)"
        )
    try:
        info = HfApi(token=token).whoami()
    except OfflineModeIsEnabled:
        raise HubError("HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it (or use --dry-run DIR)") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"the Hugging Face Hub rejected the token (HTTP {status}): log in again") from None
        raise HubError(f"the Hugging Face Hub answered with an error: {error}") from None
    except Exception as error:  # connection errors come from the HTTP client, whose classes vary between versions
        raise HubError(
            f"cannot reach the Hugging Face Hub ({type(error).__name__}: {error}); check the network "
            "(or use --dry-run DIR)"
        ) from None
    return info.get("name", "?")


@dataclass
class PushResult:
    """Where a model went: the repository id, and the local folder (dry run) or the commit URL (upload)."""

    repo_id: str
    folder: Path | None = None
    commit_url: str | None = None
    num_results: int = 0


def released_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The original release's checkpoints (`RAMiT-1_X2.pth`, ...) found in `folder`, in preset order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    found = [folder / f"{name}.pth" for name in RELEASED_CHECKPOINTS if (folder / f"{name}.pth").is_file()]
    if not found:
        raise FileNotFoundError(
            f"{folder} holds none of the released checkpoints ({', '.join(RELEASED_CHECKPOINTS)}.pth)"
        )
    return found


def push_to_hub(
    source: str | os.PathLike | PreparedModel,
    repo_id: str | None = None,
    namespace: str | None = None,
    results_dir: str | os.PathLike | None = None,
    task: str | None = None,
    dry_run: str | os.PathLike | None = None,
    overwrite: bool = False,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    onnx: bool = False,
) -> PushResult:
    """Publish a model (an original `.pth` checkpoint, converted, or a model folder) to the Hub with its model card.

    Args:
        source: original checkpoint or model folder (see :func:`prepare_model`), or a model `prepare_model` gave.
        repo_id: the repository (`namespace/name`); default `<namespace>/<preset>` for an original checkpoint and
            `<namespace>/<folder name>` for a folder.
        namespace: the user or organisation for the default `repo_id` (`HUB_NAMESPACE`, `ramit-hf`, if None).
        results_dir: folder of `ramit-hf/evaluation` JSON files; the card lists those of this model.
        task: the task of an original checkpoint whose name and weights do not tell it.
        dry_run: write the folder that would be uploaded here (atomically) and upload nothing.
        overwrite: with `dry_run`, replace an existing non-empty folder.
        token, private, commit_message: for the upload (`create_repo` + `upload_folder`, one commit).
        onnx: also export the model to `onnx/model.onnx` and `onnx/model_fp16.onnx` (see `ramit_hf.export`).

    The token and the connection are checked first (HubError), so a failed push converts and sends nothing.
    """
    if repo_id is not None and namespace is not None:
        raise ValueError("give either repo_id or namespace, not both")
    if repo_id is not None:
        validate_repo_id(repo_id)
    elif namespace is not None:
        repo_id_for("x", namespace)  # validates the namespace before any work
    if dry_run is not None:
        check_folder_free(dry_run, overwrite)
    else:
        check_hub_access(token)

    prepared = source if isinstance(source, PreparedModel) else prepare_model(source, task=task)
    repo_id = repo_id or repo_id_for(prepared.name, namespace)
    results = load_results(results_dir, prepared.result_ids)
    info = CardInfo(repo_id=repo_id, checkpoint_name=prepared.checkpoint_name, onnx=onnx)
    card = render_model_card(prepared.model.config, results, info)
    if dry_run is not None:
        folder = write_model_folder(prepared.model, dry_run, card, overwrite=overwrite, onnx=onnx)
        return PushResult(repo_id=repo_id, folder=folder, num_results=len(results))

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="ramit-push-") as scratch:
        folder = write_model_folder(prepared.model, Path(scratch) / "repo", card, onnx=onnx)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=commit_message
            or f"Upload {prepared.model.config.variant} {prepared.model.config.task} (ramit_hf)",
        )
    return PushResult(repo_id=repo_id, commit_url=str(getattr(commit, "commit_url", commit)), num_results=len(results))
