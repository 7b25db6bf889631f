"""RAMiT through spandrel's own loader and call convention (`ramit_hf.spandrel`)."""

import importlib

import pytest
import torch
from conftest import GOLDEN_TASKS, checkpoint, golden_case, golden_index
from safetensors.torch import save_file
from spandrel_env import import_spandrel

from ramit_hf import CheckpointError, RamitForImageRestoration, convert_original_checkpoint
from ramit_hf.convert import load_original_state_dict, save_model_folder

spandrel = import_spandrel()
ramit_spandrel = importlib.import_module("ramit_hf.spandrel")
INSTALLED_BY_IMPORT = ramit_spandrel.ARCH_ID in spandrel.MAIN_REGISTRY
ADDED = ramit_spandrel.install(ignore_duplicates=True)

RELEASED = sorted(n for n, info in golden_index().items() if info["checkpoint"])
RANDOM_INIT = sorted(n for n, info in golden_index().items() if not info["checkpoint"])
TOLERANCE = 1e-4


def assert_reproduces_golden(descriptor, name: str) -> None:
    case = golden_case(name)
    # spandrel's call pads as `ramit restore` does (the paper's symmetric protocol), clamps to [0, 1] and crops
    output = descriptor(case["input"])
    expected = case["output_protocol"].clamp(0, 1)
    assert output.shape == expected.shape
    assert (output - expected).abs().max() <= TOLERANCE


def test_importing_ramit_hf_does_not_install_and_install_adds_ramit_once():
    assert not INSTALLED_BY_IMPORT
    assert [support.architecture.id for support in ADDED] == ["RAMiT"]
    with pytest.raises(spandrel.DuplicateArchitectureError):
        ramit_spandrel.install()
    assert ramit_spandrel.install(ignore_duplicates=True) == []
    with pytest.raises(ValueError, match="unknown default_task 'sr-x5'"):
        ramit_spandrel.install(default_task="sr-x5", registry=spandrel.ArchRegistry())


@pytest.mark.parametrize("name", RELEASED)
def test_released_checkpoints_load_and_reproduce_the_original(name):
    info = golden_index()[name]
    descriptor = spandrel.ModelLoader().load_from_file(checkpoint(info["checkpoint"]))
    config = descriptor.model.config
    assert descriptor.architecture.id == "RAMiT"
    assert type(descriptor.model) is RamitForImageRestoration
    assert (config.variant, config.task) == (info["model_name"], GOLDEN_TASKS[info["target_mode"]])
    assert descriptor.purpose == ("SR" if info["upscale"] > 1 else "Restoration")
    assert descriptor.scale == info["upscale"]
    assert descriptor.input_channels == descriptor.output_channels == info["in_chans"]
    assert descriptor.tags[:2] == [config.variant, config.task]
    assert descriptor.size_requirements == spandrel.SizeRequirements(minimum=1)
    assert descriptor.tiling == spandrel.ModelTiling.SUPPORTED
    assert (descriptor.supports_half, descriptor.supports_bfloat16) == (
        ramit_spandrel.SUPPORTS_HALF,
        ramit_spandrel.SUPPORTS_BFLOAT16,
    )
    assert_reproduces_golden(descriptor, name)


def golden_weights(name: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix("weights."): v for k, v in golden_case(name).items() if k.startswith("weights.")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("name", RANDOM_INIT)
def test_random_init_golden_cases_load_from_pth_and_safetensors(name, suffix, tmp_path):
    path = tmp_path / f"weights{suffix}"
    weights = golden_weights(name)
    torch.save(weights, path) if suffix == ".pth" else save_file(weights, path)
    task = GOLDEN_TASKS[golden_index()[name]["target_mode"]]
    loader = spandrel.ModelLoader()
    if task in ("lle", "derain"):
        # RAMiT's color denoising, low-light and deraining weights have one shape: loaded as the default task
        # unless installed with another
        assert loader.load_from_file(path).model.config.task == ramit_spandrel.DEFAULT_TASK == "color-dn"
        registry = spandrel.ArchRegistry()
        ramit_spandrel.install(default_task=task, registry=registry)
        loader = spandrel.ModelLoader(registry=registry)
    descriptor = loader.load_from_file(path)
    assert (descriptor.model.config.variant, descriptor.model.config.task) == ("RAMiT", task)
    assert_reproduces_golden(descriptor, name)


def test_wrapped_prefixed_and_our_own_safetensors_load_the_same(tmp_path):
    file = checkpoint("RAMiT-slimLLE_LLE.pth")
    original = load_original_state_dict(file)
    reference = convert_original_checkpoint(file)
    folder = save_model_folder(reference, tmp_path / "model")
    ours = reference.state_dict()
    variants = {
        "params": {"params": original},
        "params_ema": {"params_ema": original, "params": {k: torch.zeros_like(v) for k, v in original.items()}},
        "state_dict": {"state_dict": original},
        "module": {f"module.{k}": v for k, v in original.items()},
        "wrapped module": {"state_dict": {f"module.{k}": v for k, v in original.items()}},
        "ours, module": {f"module.{k}": v for k, v in ours.items()},
    }
    paths = {"ours": folder / "model.safetensors"}
    for label, state_dict in variants.items():
        paths[label] = tmp_path / f"{label}.pth"
        torch.save(state_dict, paths[label])
    for label, path in paths.items():
        descriptor = spandrel.ModelLoader().load_from_file(path)
        assert descriptor.architecture.id == "RAMiT", label
        assert (descriptor.model.config.variant, descriptor.model.config.task) == ("RAMiT-slimLLE", "lle"), label
        loaded = descriptor.model.state_dict()
        assert loaded.keys() == ours.keys(), label
        assert all(torch.equal(loaded[k], v) for k, v in ours.items()), label
    # the converter reads our names too (the same detection)
    again = convert_original_checkpoint(ours)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.items())


def other_architectures() -> dict[str, dict[str, torch.Tensor]]:
    """Test-sized models of spandrel's own architectures."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    return {
        "ESRGAN": ESRGAN(num_filters=16, num_blocks=2, scale=2).state_dict(),
        "Compact": Compact(num_feat=16, num_conv=4, upscale=2).state_dict(),
        "SwinIR": SwinIR(
            img_size=16, embed_dim=24, depths=[2], num_heads=[2], window_size=4, upscale=2, upsampler="pixelshuffle"
        ).state_dict(),
    }


def test_other_architectures_are_not_claimed():
    arch = ramit_spandrel.RamitArch()
    for expected, state_dict in other_architectures().items():
        assert not arch.detect(state_dict), expected
        assert spandrel.ModelLoader().load_from_state_dict(state_dict).architecture.id == expected


def near_misses() -> dict[str, dict[str, torch.Tensor]]:
    original = dict(load_original_state_dict(checkpoint("RAMiT-slimSR_X2.pth")))
    without_block = {k: v for k, v in original.items() if not k.startswith("stage4.blocks.block7.")}
    body_shape = dict(original, **{"stage2.blocks.block1.ffn.hidden.weight": torch.zeros(97, 48, 1, 1)})
    head_shape = dict(original, **{"to_target.final_conv.weight": torch.zeros(3, 3, 5, 5)})
    return {"without_block": without_block, "body_shape": body_shape, "head_shape": head_shape}


@pytest.mark.parametrize(
    "label, message",
    [
        ("without_block", r"does not fit RAMiT-slimSR sr-x2: missing \(\d+\): ramit\.stages\.3\.blocks\.7\."),
        ("body_shape", r"matches no RAMiT variant"),
        ("head_shape", r"does not fit RAMiT-slimSR sr-x2: shape mismatch \(1\): reconstruction\.final_conv"),
    ],
)
def test_near_miss_state_dicts_are_not_claimed_and_the_converter_names_the_problem(label, message):
    state_dict = near_misses()[label]
    assert not ramit_spandrel.RamitArch().detect(state_dict)
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_state_dict(state_dict)
    with pytest.raises(CheckpointError, match=message):
        convert_original_checkpoint(state_dict)


def test_half_precision_flags_match_what_the_model_does():
    descriptor = spandrel.ModelLoader().load_from_file(checkpoint("RAMiT-slimLLE_LLE.pth"))
    x = golden_case("RAMiT-slimLLE_LLE")["input"]
    full = descriptor(x)
    for dtype, supported in (
        (torch.bfloat16, ramit_spandrel.SUPPORTS_BFLOAT16),
        (torch.float16, ramit_spandrel.SUPPORTS_HALF),
    ):
        if not supported:
            with pytest.raises(spandrel.UnsupportedDtypeError):
                descriptor.to(dtype)
            continue
        low = descriptor.to(dtype)(x.to(dtype))
        assert low.dtype == dtype
        assert ((low.float() - full).norm() / full.norm()).item() < 2e-2
    descriptor.float()


def broken_values() -> dict[str, dict[str, torch.Tensor]]:
    original = dict(load_original_state_dict(checkpoint("RAMiT-slimSR_X2.pth")))
    key = "stage2.blocks.block1.ffn.hidden.weight"
    nan, inf = original[key].clone(), original[key].clone()
    nan[0, 0] = float("nan")
    inf[-1, -1] = float("inf")
    quantised = {k: (v * 64).round().clamp(-128, 127).to(torch.int8) for k, v in original.items()}
    return {
        "nan": dict(original, **{key: nan}),
        "inf": dict(original, **{key: inf}),
        "int8": quantised,
        "bool": dict(original, **{key: original[key] > 0}),
    }


@pytest.mark.parametrize(
    "label, message",
    [
        ("nan", r"stage2\.blocks\.block1\.ffn\.hidden\.weight holds 1 non-finite values"),
        ("inf", r"holds 1 non-finite values \(NaN or infinity\)"),
        ("int8", r"holds int8 values; RAMiT's weights are floating point"),
        ("bool", r"holds bool values"),
    ],
)
def test_weights_no_image_can_be_computed_from_are_refused_by_every_loader(label, message, tmp_path):
    state_dict = broken_values()[label]
    # spandrel claims RAMiT's shapes, and its load names the problem instead of giving NaN or flat grey images
    assert ramit_spandrel.RamitArch().detect(state_dict)
    with pytest.raises(CheckpointError, match=message):
        spandrel.ModelLoader().load_from_state_dict(state_dict)
    with pytest.raises(CheckpointError, match=message):
        convert_original_checkpoint(state_dict)
    # the same weights under our names in a model folder, through from_pretrained
    model = convert_original_checkpoint(checkpoint("RAMiT-slimSR_X2.pth"))
    folder = save_model_folder(model, tmp_path / "model")
    ours = dict(model.state_dict())
    ours["ramit.stages.1.blocks.1.ffn.fc1.weight"] = state_dict["stage2.blocks.block1.ffn.hidden.weight"]
    if label == "int8":
        ours = {k: v.to(torch.int8) for k, v in ours.items()}
    save_file({k: v.contiguous() for k, v in ours.items()}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=message.replace(r"stage2\.blocks\.block1\.ffn\.hidden", r"\S+")):
        RamitForImageRestoration.from_pretrained(folder)


def crafted_state_dicts():
    """Every parameter of a released checkpoint in turn replaced by a tensor with no dimension or no element, and
    keys that end where a stage or block index would be."""
    original = dict(load_original_state_dict(checkpoint("RAMiT-slimSR_X2.pth")))
    for key in sorted(original):
        for replacement in (torch.tensor(1.0), torch.zeros(0), torch.zeros(original[key].shape[0], 0)):
            yield f"{key} {tuple(replacement.shape)}", dict(original, **{key: replacement})
    for key in ("stage1", "stage1.blocks", "ramit.stages.0", "ramit.stages.0.blocks"):
        yield key, dict(original, **{key: torch.ones(4)})


def test_crafted_state_dicts_are_unsupported_never_a_crash():
    arch = ramit_spandrel.RamitArch()
    for label, state_dict in crafted_state_dicts():
        assert not arch.detect(state_dict), label
        with pytest.raises(CheckpointError):
            convert_original_checkpoint(state_dict)
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_state_dict(state_dict)
