"""Model cards, rendered from the template `model_card_template.md` beside this file, the `ramit-hf/evaluation`
JSON files that `ramit evaluate` and `scripts/make_results.py` write (the numbers are never typed by hand), and the
parameter count and FLOPs measured on the model (`ramit_hf.hub.complexity`).
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..configuration_ramit import TASK_UPSCALE, RamitConfig
from .complexity import Complexity, measure_complexity
from .repos import ORIGINAL_REPOSITORY, PAPER_URL, original_checkpoint_name, repo_id_for

_TEMPLATE = Path(__file__).with_name("model_card_template.md")


def load_results(results_dir: str | os.PathLike | None, model_ids) -> list:
    """The evaluation results (`ramit_hf.protocol.EvaluationResult`) in `results_dir/*.json` whose model id is one
    of `model_ids` (e.g. the original checkpoint name `RAMiT-1_X2`), ordered by test set and noise level.
    A missing or None folder gives no results."""
    from ..protocol.results import load_result

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
_DATASET_ORDER = (
    "Set5",
    "Set14",
    "B100",
    "BSD100",
    "Urban100",
    "Manga109",
    "CBSD68",
    "Kodak24",
    "McMaster",
    "Set12",
    "BSD68",
    "LOL",
    "VE-LOL",
    "Rain100L",
    "Rain100H",
    "Test100",
)


def _result_order(result):
    name, sigma = result.dataset["name"], result.protocol.get("sigma")
    rank = _DATASET_ORDER.index(name) if name in _DATASET_ORDER else len(_DATASET_ORDER)
    return (rank, name, -1 if sigma is None else sigma)


# ----------------------------------------------------------------------------------------------
# model cards

# What the card says about each task: (title, tags, input noun, what the output is, an example input file name).
_TASK_CARD = {
    "sr-x2": (
        "image super-resolution x2",
        ["super-resolution", "image-super-resolution"],
        "a low-resolution image",
        "the image at twice its width and height",
        "low_res.png",
    ),
    "sr-x3": (
        "image super-resolution x3",
        ["super-resolution", "image-super-resolution"],
        "a low-resolution image",
        "the image at three times its width and height",
        "low_res.png",
    ),
    "sr-x4": (
        "image super-resolution x4",
        ["super-resolution", "image-super-resolution"],
        "a low-resolution image",
        "the image at four times its width and height",
        "low_res.png",
    ),
    "color-dn": (
        "color image denoising",
        ["denoising", "image-denoising"],
        "a noisy color image",
        "the denoised image (same size)",
        "noisy.png",
    ),
    "gray-dn": (
        "grayscale image denoising",
        ["denoising", "image-denoising"],
        "a noisy grayscale image",
        "the denoised image (same size)",
        "noisy.png",
    ),
    "lle": (
        "low-light image enhancement",
        ["low-light-image-enhancement"],
        "an under-exposed image",
        "the enhanced image (same size)",
        "dark.png",
    ),
    "derain": (
        "image deraining",
        ["deraining"],
        "a rainy image",
        "the image without rain streaks (same size)",
        "rainy.png",
    ),
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
    f"The original repository ([rami0205/RAMiT]({ORIGINAL_REPOSITORY})) states no license for its code or its weights. "
    "These weights "
    "are the authors' release, converted to the `transformers` format and redistributed with credit for research "
    "use; ask the authors before any other use. The conversion and the `ramit_hf` code are MIT-licensed."
)


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
        "channels_note": ""
        if config.num_channels == 3
        else ("\nThe model works on one channel: color inputs are restored as their luma (BT.601).\n"),
        "protocol": _protocol(results, task),
        "results": _results_section(results, task),
        "training": _training(config, info),
        "license_note": LICENSE_NOTE
        if released
        else (
            "These weights were trained with `ramit_hf`; the architecture is the original authors' "
            f"([rami0205/RAMiT]({ORIGINAL_REPOSITORY})), whose repository states no license."
        ),
        "onnx_section": _onnx_section(config, info, example_file),
        "paper_url": PAPER_URL,
        "original_repository": ORIGINAL_REPOSITORY,
        "version": __version__,
    }
    template = string.Template(_TEMPLATE.read_text(encoding="utf-8"))
    text = template.substitute(values)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def _onnx_section(config, info: CardInfo, example_file: str) -> str:
    if not info.onnx:
        return ""
    from ..export.hub import onnx_card_section

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
    padded = (
        ""
        if c.padded_size == c.input_size
        else (f" The model pads the input to {_size(c.padded_size)} (a multiple of 32) and that is what is computed.")
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
        "`ramit evaluate` (`ramit_hf.protocol`), the protocol of the original test code (`ddp_engine_test.py`):",
        "",
    ]
    if channel == "Y":
        lines.append(
            f"- PSNR and SSIM on the Y channel (BT.601), {protocol['crop_border']} pixels cropped from every border;"
        )
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
            how = (
                "With a paired test set (`LQ/` and `HQ/` folders with matching names), `ramit evaluate --model "
                "<this repo> --dataset <folder>` measures it under the original protocol."
            )
            return (
                f"Not measured: {_NO_TEST_SET[task]}, so this card has no results (and no `model-index` entries). {how}"
            )
        return (
            "Not measured yet, so this card has no results (and no `model-index` entries): `ramit evaluate "
            "--model <this repo> --dataset <folder>` measures it under the original protocol."
        )
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
            (
                r.environment.get("ramit_hf"),
                r.environment.get("torch"),
                r.environment.get("device"),
                r.environment.get("dtype"),
                r.environment.get("computation", r.environment.get("attention_backend")),
            )
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
