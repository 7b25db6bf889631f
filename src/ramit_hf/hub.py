"""The Hugging Face Hub side: which repository each released checkpoint goes to, model cards, and publishing.

* **Repository ids.** Every original setting has a preset name (`ramit_hf.PRESETS`, e.g. `ramit1-sr-x2`); its Hub
  repository is `<namespace>/<preset>` with the namespace `HUB_NAMESPACE` (`ramit-hf`) unless one is given.
  `RELEASED_CHECKPOINTS` maps the original file names (`RAMiT-1_X2`) to presets and `PUBLISHED_PRESETS` lists the
  checkpoints this project has and publishes. This module is the one place that mapping lives.
* **Model cards** (:func:`render_model_card`) are rendered from the template `model_card_template.md` beside this file,
  the `ramit-hf/evaluation` JSON files that `ramit evaluate` and `scripts/make_results.py` write (the numbers are
  never typed by hand), and the parameter count and FLOPs measured on the model (:func:`measure_complexity`).
* **Publishing** (:func:`push_to_hub`): a folder holding the config, `model.safetensors`, the preprocessor config, the
  modeling, processing and pipeline code (`auto_map` and `custom_pipelines` in the config, so
  `pipeline("image-restoration", model=repo_id, trust_remote_code=True)` works without `ramit_hf`) and the card,
  uploaded in one commit with `huggingface_hub`. `dry_run=DIR` writes that very folder locally instead. The token
  and the connection are checked before anything is converted or sent, and local folders are written atomically.
"""

from __future__ import annotations

import copy
import math
import os
import re
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_folder, check_folder_free
from .configuration_ramit import PRESETS, TASK_UPSCALE, RamitConfig, preset_name
from .convert import FILE_TASKS

HUB_NAMESPACE = "ramit-hf"

# task -> the code the original release uses in its file names (RAMiT-1_X2.pth, RAMiT_CDN.pth, RAMiT-slimLLE_LLE.pth)
_FILE_CODES = {task: code for code, task in FILE_TASKS.items()}

# original checkpoint name (file name without .pth) -> preset, for every setting the authors released
RELEASED_CHECKPOINTS: dict[str, str] = {
    f"{variant}_{_FILE_CODES[task]}": name for name, (variant, task) in PRESETS.items()
}

# the released checkpoints this project has (the shared reference folder) and publishes, with a model card each
PUBLISHED_PRESETS: tuple[str, ...] = (
    "ramit1-sr-x2",
    "ramit1-sr-x3",
    "ramit1-sr-x4",
    "ramit1-color-dn",
    "ramit-slimsr-x2",
    "ramit-slimsr-x3",
    "ramit-slimsr-x4",
    "ramit-slimlle",
)

ORIGINAL_REPOSITORY = "https://github.com/rami0205/RAMiT"
PAPER_URL = "https://arxiv.org/abs/2305.11474"

# Sizes the complexity is measured at: the convention of lightweight super-resolution papers (an output of
# 1280 x 720, so the LR input is 1280 x 720 divided by the scale, rounded up) and 1280 x 720 for restoration.
COMPLEXITY_OUTPUT_SIZE = (720, 1280)  # (height, width)

_TEMPLATE = Path(__file__).with_name("model_card_template.md")
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubError(RuntimeError):
    """Publishing cannot go ahead (no token, no connection, a bad repository id); nothing was uploaded."""


# ----------------------------------------------------------------------------------------------
# repository ids


def original_checkpoint_name(preset: str) -> str:
    """The original release's file name (without `.pth`) of a preset, e.g. `ramit1-sr-x2` -> `RAMiT-1_X2`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown RAMiT preset {preset!r}; choose one of {', '.join(PRESETS)}")
    variant, task = PRESETS[preset]
    return f"{variant}_{_FILE_CODES[task]}"


def repo_id_for(name: str, namespace: str | None = None) -> str:
    """The Hub repository id of a preset (or of any repository name): `<namespace>/<name>`, `ramit-hf` by default."""
    namespace = HUB_NAMESPACE if namespace is None else namespace
    for part, what in ((namespace, "namespace"), (name, "repository name")):
        if not _REPO_NAME.match(part) or ".." in part or part.endswith((".git", ".")):
            raise ValueError(
                f"{part!r} is not a valid Hub {what}: use letters, digits, '-', '_' and '.', at most 96 characters"
            )
    return f"{namespace}/{name}"


def validate_repo_id(repo_id: str) -> str:
    """`repo_id` if it has the form `namespace/name` with valid parts; a ValueError naming the problem otherwise."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise ValueError(
            f"{repo_id!r} is not a Hub repository id: expected 'namespace/name', e.g. 'ramit-hf/ramit1-sr-x2'"
        )
    return repo_id_for(parts[1], parts[0])


def hub_models(namespace: str | None = None) -> dict[str, str]:
    """Every published preset and its repository id."""
    return {preset: repo_id_for(preset, namespace) for preset in PUBLISHED_PRESETS}


def preset_of(config: RamitConfig) -> str | None:
    """The preset a config's (variant, task) is, or None for a setting the authors never released."""
    if config.variant is None or config.task is None:
        return None
    try:
        return preset_name(config.variant, config.task)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# complexity


@dataclass(frozen=True)
class Complexity:
    """Parameters and FLOPs of one forward pass.

    `flops` counts what `torch.utils.flop_counter.FlopCounterMode` counts: matrix multiplications, convolutions and
    attention, a multiply-add as 2 FLOPs (so `macs = flops / 2`); element-wise operations (norms, activations,
    softmax) are not counted; attention is counted as the matmuls of the faithful path. Sizes are (height, width):
    the input, the size the model pads it to (a multiple of 32; the padded size is what is computed), and the output.
    """

    parameters: int
    flops: int
    input_size: tuple[int, int]
    padded_size: tuple[int, int]
    output_size: tuple[int, int]

    @property
    def macs(self) -> int:
        return self.flops // 2


def complexity_input_size(config: RamitConfig) -> tuple[int, int]:
    """The input (height, width) complexity is measured at: one whose output is `COMPLEXITY_OUTPUT_SIZE`."""
    return tuple(math.ceil(side / config.upscale) for side in COMPLEXITY_OUTPUT_SIZE)


def measure_complexity(config: RamitConfig, input_size: tuple[int, int] | None = None) -> Complexity:
    """Count the parameters and FLOPs of a model with this config on one `input_size` image (default:
    :func:`complexity_input_size`). The model is built on the meta device: shapes only, no memory, no weights."""
    from torch.utils.flop_counter import FlopCounterMode

    from .modeling_ramit import RamitForImageRestoration

    height, width = input_size or complexity_input_size(config)
    multiple = config.pad_multiple
    # The faithful path computes attention with explicit matmuls, which the counter sees on every device (the fused
    # path's SDPA kernels are not all counted, e.g. not the CPU flash kernel); both compute the same function.
    config = copy.deepcopy(config)
    config.attention_backend = "faithful"
    with torch.device("meta"):
        model = RamitForImageRestoration(config).eval()
        pixel_values = torch.empty(1, config.num_channels, height, width)
    parameters = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = model(pixel_values=pixel_values).reconstruction
    return Complexity(
        parameters=parameters,
        flops=int(counter.get_total_flops()),
        input_size=(height, width),
        padded_size=(-(-height // multiple) * multiple, -(-width // multiple) * multiple),
        output_size=tuple(output.shape[-2:]),
    )


# ----------------------------------------------------------------------------------------------
# evaluation results


def load_results(results_dir: str | os.PathLike | None, model_ids) -> list:
    """The evaluation results (`ramit_hf.evaluation.EvaluationResult`) in `results_dir/*.json` whose model id is one
    of `model_ids` (e.g. the original checkpoint name `RAMiT-1_X2`), ordered by test set and noise level.
    A missing or None folder gives no results."""
    from .evaluation import load_result

    if results_dir is None or not Path(results_dir).is_dir():
        return []
    ids = {model_ids} if isinstance(model_ids, str) else set(model_ids)
    found = []
    for path in sorted(Path(results_dir).glob("*.json")):
        result = load_result(path)
        if result.model.get("id") in ids:
            found.append(result)
    return sorted(found, key=_result_order)


# the field's usual order of test sets in tables; others follow alphabetically
_DATASET_ORDER = ("Set5", "Set14", "B100", "BSD100", "Urban100", "Manga109", "CBSD68", "Kodak24", "McMaster", "Set12",
                  "BSD68", "LOL", "VE-LOL", "Rain100L", "Rain100H", "Test100")


def _result_order(result):
    name, sigma = result.dataset["name"], result.protocol.get("sigma")
    rank = _DATASET_ORDER.index(name) if name in _DATASET_ORDER else len(_DATASET_ORDER)
    return (rank, name, -1 if sigma is None else sigma)


# ----------------------------------------------------------------------------------------------
# model cards

# What the card says about each task: (title, tags, input noun, what the output is, an example input file name).
_TASK_CARD = {
    "sr-x2": ("image super-resolution x2", ["super-resolution", "image-super-resolution"],
              "a low-resolution image", "the image at twice its width and height", "low_res.png"),
    "sr-x3": ("image super-resolution x3", ["super-resolution", "image-super-resolution"],
              "a low-resolution image", "the image at three times its width and height", "low_res.png"),
    "sr-x4": ("image super-resolution x4", ["super-resolution", "image-super-resolution"],
              "a low-resolution image", "the image at four times its width and height", "low_res.png"),
    "color-dn": ("color image denoising", ["denoising", "image-denoising"],
                 "a noisy color image", "the denoised image (same size)", "noisy.png"),
    "gray-dn": ("grayscale image denoising", ["denoising", "image-denoising"],
                "a noisy grayscale image", "the denoised image (same size)", "noisy.png"),
    "lle": ("low-light image enhancement", ["low-light-image-enhancement"],
            "an under-exposed image", "the enhanced image (same size)", "dark.png"),
    "derain": ("image deraining", ["deraining"], "a rainy image", "the image without rain streaks (same size)",
               "rainy.png"),
}

# How the authors trained each released setting, from the training commands in the original README.
_TRAINING = {
    "sr": "DIV2K, 64 x 64 LR patches, batch 32 per GPU on 2 GPUs, L1 loss; x2 trained from scratch for 500 epochs, "
    "x3 and x4 fine-tuned from pretrained weights for 300 epochs (50-epoch warm start)",
    "color-dn": "DFBW (DIV2K + Flickr2K + BSD500 + WED) with blind Gaussian noise (σ drawn from [0, 50] per patch), "
    "progressive patch sizes 64 / 96 / 128, L1 loss, 400 epochs",
    "gray-dn": "DFBW (DIV2K + Flickr2K + BSD500 + WED) in grayscale with blind Gaussian noise (σ drawn from [0, 50] "
    "per patch), progressive patch sizes 64 / 96 / 128, L1 loss, 400 epochs",
    "lle": "the authors' low-light set (LOL + VE-LOL), progressive patch sizes 64 / 96 / 128, L1 loss, 400 epochs",
    "derain": "the authors' deraining set (Rain13K), progressive patch sizes 64 / 96 / 128, L1 loss, 400 epochs",
}

# a low-light or deraining model has no test set in this project's reference data
_NO_TEST_SET = {
    "lle": "no low-light test set (LOL, VE-LOL) is available in this project's reference data",
    "derain": "no deraining test set (Rain100L/H, Test100, ...) is available in this project's reference data",
}

LICENSE_NOTE = (
    "The original repository ([rami0205/RAMiT]({url})) states no license for its code or its weights. These weights "
    "are the authors' release, converted to the `transformers` format and redistributed with credit for research "
    "use; ask the authors before any other use. The conversion and the `ramit_hf` code are MIT-licensed."
).format(url=ORIGINAL_REPOSITORY)


@dataclass
class CardInfo:
    """What a card is rendered from besides the config and the results.

    Args:
        repo_id: the Hub repository the card belongs to (used in the usage examples).
        checkpoint_name: the original release's checkpoint name (`RAMiT-1_X2`), or None for weights trained with
            `ramit_hf` (the card then does not call them the authors').
        complexity: measured parameters and FLOPs; measured from the config when None.
        trained_from: for weights trained with `ramit_hf`, a sentence on how (optional).
        extra_tags: tags to add to the metadata's.
        onnx: the repository holds ONNX files (`ramit push --onnx`): the card says how to run them.
    """

    repo_id: str
    checkpoint_name: str | None = None
    complexity: Complexity | None = None
    trained_from: str | None = None
    extra_tags: list[str] = field(default_factory=list)
    onnx: bool = False


def render_model_card(config: RamitConfig, results: list, info: CardInfo) -> str:
    """The model card (README.md with YAML metadata) of a model, from its config, its evaluation results
    (`EvaluationResult`s, see :func:`load_results`) and `info`."""
    task, variant = config.task, config.variant
    if task not in _TASK_CARD:
        raise ValueError(f"a model card needs config.task to be one of {', '.join(_TASK_CARD)}, got {task!r}")
    for result in results:
        if result.model.get("task") != task:
            raise ValueError(f"result {result.title()} is for task {result.model.get('task')!r}, not {task!r}")
    complexity = info.complexity or measure_complexity(config)
    title, task_tags, input_noun, output_noun, example_file = _TASK_CARD[task]
    name = info.repo_id.split("/")[-1]
    released = info.checkpoint_name is not None
    values = {
        "metadata": _metadata(config, results, info, name, task_tags),
        "title": f"{variant or 'RAMiT'}: {title}",
        "repo_id": info.repo_id,
        "intro": _intro(config, title, input_noun, output_noun, info),
        "architecture": _architecture(config),
        "complexity_table": _complexity_table(complexity),
        "complexity_note": _complexity_note(complexity),
        "example_file": example_file,
        "channels_note": "" if config.num_channels == 3 else (
            "\nThe model works on one channel: color inputs are restored as their luma (BT.601).\n"
        ),
        "protocol": _protocol(results, task),
        "results": _results_section(results, task),
        "training": _training(config, info),
        "license_note": LICENSE_NOTE if released else (
            "These weights were trained with `ramit_hf`; the architecture is the original authors' "
            f"([rami0205/RAMiT]({ORIGINAL_REPOSITORY})), whose repository states no license."
        ),
        "onnx_section": _onnx_section(config, info, example_file),
        "paper_url": PAPER_URL,
        "original_repository": ORIGINAL_REPOSITORY,
    }
    template = string.Template(_TEMPLATE.read_text(encoding="utf-8"))
    text = template.substitute(values)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def _onnx_section(config, info: CardInfo, example_file: str) -> str:
    if not info.onnx:
        return ""
    from .export.hub import onnx_card_section

    return "\n" + onnx_card_section(info.repo_id, example_file, config.num_channels) + "\n"


def _metadata(config, results, info: CardInfo, name: str, task_tags: list[str]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = []
    for result in results:
        task_name, dataset_config = _model_index_task(result)
        channel = result.protocol["metric_channel"]
        for metric, value, digits in (("psnr", result.mean_psnr, 3), ("ssim", result.mean_ssim, 4)):
            eval_results.append(
                EvalResult(
                    task_type="image-to-image",
                    task_name=task_name,
                    dataset_type=result.dataset["name"],
                    dataset_name=result.dataset["name"],
                    dataset_config=dataset_config,
                    metric_type=metric,
                    metric_name=f"{metric.upper()} ({channel})",
                    metric_value=round(value, digits),
                    source_name="ramit_hf evaluation (ramit evaluate), self-reported",
                    source_url=f"https://huggingface.co/{info.repo_id}",
                )
            )
    tags = ["ramit", "image-restoration", *task_tags, "custom_code", *(["onnx"] if info.onnx else []), *info.extra_tags]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-to-image",
        license="other",
        license_name="unspecified-original",
        license_link=ORIGINAL_REPOSITORY,
        tags=list(dict.fromkeys(tags)),
        model_name=name,
        eval_results=eval_results or None,
    )
    return data.to_yaml()


def _model_index_task(result) -> tuple[str, str | None]:
    """(task name, dataset config) of a result in the model-index: e.g. ("Image Super-Resolution x2", None) or
    ("Color Image Denoising", "sigma15")."""
    task, sigma = result.model["task"], result.protocol.get("sigma")
    title = _TASK_CARD[task][0]
    return title[0].upper() + title[1:], (None if sigma is None else f"sigma{sigma}")


def _intro(config, title, input_noun, output_noun, info: CardInfo) -> str:
    variant = config.variant or "RAMiT"
    text = (
        f"**{variant}** for **{title}**: give it {input_noun}, get {output_noun}. RAMiT (Reciprocal Attention Mixing "
        f"Transformer; Choi et al., CVPR 2024 Workshops, [arXiv 2305.11474]({PAPER_URL})) is a lightweight "
        "restoration transformer: each block computes windowed spatial self-attention and channel self-attention in "
        "parallel (D-RAMiT), and a hierarchical mixer (H-RAMi) blends the attention maps of all scales."
    )
    if info.checkpoint_name:
        text += (
            f"\n\nThese are the authors' released weights (`{info.checkpoint_name}.pth` of "
            f"[rami0205/RAMiT]({ORIGINAL_REPOSITORY})), converted to a `transformers` model with "
            "[`ramit_hf`](#usage); the converted model reproduces the original implementation's outputs."
        )
    else:
        source = f": {info.trained_from}" if info.trained_from else "."
        text += "\n\nThese weights were trained with `ramit_hf`" + source
    return text


def _architecture(config) -> str:
    mobivari = {1: "MobileNet-v1-style (depthwise + pointwise)", 2: "MobileNet-v2-style (expand, depthwise, project)"}
    depths = " / ".join(str(d) for d in config.depths)
    upscale = f", pixel-shuffle upsampling x{config.upscale}" if config.upscale > 1 else ", global residual"
    return (
        f"{config.variant or 'RAMiT'}: {config.embed_dim} channels, {depths} D-RAMiT blocks in its four stages "
        f"(full, 1/2, 1/4 resolution, then full after the Bottleneck), {config.window_size} x {config.window_size} "
        f"attention windows, {mobivari.get(config.mobivari_version, 'MobiVari')} MobiVari layers{upscale}; "
        f"{config.num_channels}-channel input and output in [0, 1]."
    )


def _size(size) -> str:
    """(height, width) -> "width x height", the way image sizes are usually written."""
    return f"{size[1]} x {size[0]}"


def _complexity_table(c: Complexity) -> str:
    return "\n".join(
        [
            "| Parameters | FLOPs | MACs | Input (W x H) | Output (W x H) |",
            "| ---: | ---: | ---: | :---: | :---: |",
            f"| {c.parameters:,} | {c.flops / 1e9:.1f} G | {c.macs / 1e9:.1f} G | {_size(c.input_size)} | "
            f"{_size(c.output_size)} |",
        ]
    )


def _complexity_note(c: Complexity) -> str:
    padded = "" if c.padded_size == c.input_size else (
        f" The model pads the input to {_size(c.padded_size)} (a multiple of 32) and that is what is computed."
    )
    return (
        "Measured with `torch.utils.flop_counter.FlopCounterMode` on one forward pass (`ramit_hf.hub."
        "measure_complexity`) at an output of 1280 x 720 (for super-resolution an input of that size divided by the "
        "scale, as lightweight super-resolution papers count). It counts "
        "matrix multiplications (attention's included), convolutions and linear layers, a multiply-add as 2 FLOPs "
        f"(MACs = FLOPs / 2); element-wise operations (norms, activations, softmax) are not counted.{padded}"
    )


def _protocol(results, task) -> str:
    if not results:
        return (
            "`ramit evaluate` measures the model with the protocol of the original test code (see `ramit_hf."
            "evaluation`)."
        )
    protocol = results[0].protocol
    channel = protocol["metric_channel"]
    lines = [
        "`ramit evaluate` (`ramit_hf.evaluation`), the protocol of the original test code (`ddp_engine_test.py`):",
        "",
    ]
    if channel == "Y":
        lines.append(f"- PSNR and SSIM on the Y channel (BT.601), {protocol['crop_border']} pixels cropped from "
                     "every border;")
    else:
        lines.append(f"- PSNR and SSIM on {channel}, no border cropped;")
    for source in dict.fromkeys(_input_description(r) for r in results):
        lines.append(f"- {source};")
    lines.append(f"- padding: {protocol['padding']};")
    lines.append(f"- quantisation: {protocol['quantization']}.")
    return "\n".join(lines)


def _input_description(result) -> str:
    kind = result.dataset["input"]["kind"]
    source = result.dataset["input"].get("source")
    name = result.dataset["name"]
    if kind == "lr-folder":
        return f"{name} inputs: the set's LR files (`{source}`), the ground truth cropped to the LR size x the scale"
    if kind == "imresize":
        return f"{name} inputs: the ground truth downscaled with MATLAB-exact bicubic `imresize`"
    if kind == "gaussian-noise":
        return f"{name} inputs: additive white Gaussian noise, {source}"
    return f"{name} inputs: {kind} ({source})" if source else f"{name} inputs: {kind}"


def _results_section(results, task) -> str:
    if not results:
        if task in _NO_TEST_SET:
            how = ("With a paired test set (`LQ/` and `HQ/` folders with matching names), `ramit evaluate --model "
                   "<this repo> --dataset <folder>` measures it under the original protocol.")
            return (
                f"Not measured: {_NO_TEST_SET[task]}, so this card has no results (and no `model-index` entries). {how}"
            )
        return ("Not measured yet, so this card has no results (and no `model-index` entries): `ramit evaluate "
                "--model <this repo> --dataset <folder>` measures it under the original protocol.")
    metric = results[0].protocol["metric_channel"]
    denoising = any(r.protocol.get("sigma") is not None for r in results)
    header = ["Test set"] + (["σ"] if denoising else []) + ["Images", f"PSNR-{metric} (dB)", f"SSIM-{metric}"]
    align = ["---"] + ([":---:"] if denoising else []) + ["---:", "---:", "---:"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for r in results:
        cells = [r.dataset["name"]] + ([str(r.protocol.get("sigma"))] if denoising else [])
        cells += [str(len(r.images)), f"{r.mean_psnr:.3f}", f"{r.mean_ssim:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    environments = sorted(
        {
            (r.environment.get("ramit_hf"), r.environment.get("torch"), r.environment.get("device"),
             r.environment.get("dtype"), r.environment.get("attention_backend"))
            for r in results
        },
        key=str,
    )
    dates = sorted(r.date[:10] for r in results if r.date)
    when = "" if not dates else f", {dates[0]}" if dates[0] == dates[-1] else f", {dates[0]} to {dates[-1]}"
    lines.append("")
    for version, torch_version, device, dtype, backend in environments:
        lines.append(
            f"Measured with ramit_hf {version}, torch {torch_version} on {device} ({dtype}, attention backend "
            f"`{backend}`){when}."
        )
    return "\n".join(lines)


def _training(config, info: CardInfo) -> str:
    if not info.checkpoint_name:
        return info.trained_from or "Trained with `ramit_hf` (`ramit train`)."
    key = "sr" if config.task in TASK_UPSCALE else config.task
    return f"By the authors (from their README's training commands and their code): {_TRAINING[key]}."


def card_for_preset(preset: str, results_dir=None, namespace: str | None = None) -> str:
    """The card of a released preset (e.g. `ramit1-sr-x2`), with the results of its original checkpoint found in
    `results_dir` (see :func:`load_results`)."""
    config = RamitConfig.from_preset(preset)
    checkpoint = original_checkpoint_name(preset)
    results = load_results(results_dir, {checkpoint, preset})
    info = CardInfo(repo_id=repo_id_for(preset, namespace), checkpoint_name=checkpoint)
    return render_model_card(config, results, info)


# ----------------------------------------------------------------------------------------------
# model folders and publishing


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
    from .convert import convert_original_checkpoint
    from .inference import load_model

    path = Path(source)
    if path.suffix in (".pth", ".pt") or path.is_file():
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
    from .convert import processor_for
    from .pipeline_image_restoration import ImageRestorationPipeline

    with atomic_folder(folder, overwrite=overwrite) as staging:
        pipe = ImageRestorationPipeline(model=model, image_processor=processor_for(model.config))
        # the pipeline writes the model (with auto_map), its processor, and its own code plus custom_pipelines
        pipe.save_pretrained(staging)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if onnx:
            from .export.hub import write_onnx_files

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
            commit_message=commit_message or f"Upload {prepared.model.config.variant} {prepared.model.config.task} "
            "(ramit_hf)",
        )
    return PushResult(repo_id=repo_id, commit_url=str(getattr(commit, "commit_url", commit)), num_results=len(results))


__all__ = [
    "HUB_NAMESPACE",
    "PUBLISHED_PRESETS",
    "RELEASED_CHECKPOINTS",
    "CardInfo",
    "Complexity",
    "HubError",
    "PushResult",
    "card_for_preset",
    "check_hub_access",
    "complexity_input_size",
    "hub_models",
    "load_results",
    "measure_complexity",
    "original_checkpoint_name",
    "prepare_model",
    "preset_of",
    "push_to_hub",
    "released_checkpoints",
    "render_model_card",
    "repo_id_for",
    "validate_repo_id",
    "write_model_folder",
]
