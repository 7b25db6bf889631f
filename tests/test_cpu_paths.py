"""The CPU inference paths: window attention as batched products on gathered windows ("bmm", the default) or
through scaled_dot_product_attention ("sdpa"), the bfloat16 body, and the choice `choose_compute` makes."""

import copy

import pytest
import torch
from conftest import golden_case, golden_index, golden_model, shared_path

from ramit_hf import RamitConfig, RamitForImageRestoration, convert_original_checkpoint
from ramit_hf.forward import restore_whole
from ramit_hf.inference import Compute, choose_compute, cpu_has_native_bfloat16
from ramit_hf.pipeline_image_restoration import ImageRestorationPipeline
from ramit_hf.protocol import Protocol, evaluate_model, load_test_set


@pytest.mark.parametrize("kind", ["bmm", "sdpa"])
@pytest.mark.parametrize("name", sorted(golden_index()))
def test_window_attention_kinds_match_the_original_on_the_golden_cases(name, kind):
    model = golden_model(name)
    model.set_attention_backend("fused")
    model.set_window_attention(kind, chunk=3)  # chunks that do not divide the windows
    case = golden_case(name)
    with torch.no_grad():
        out = model(case["input"]).reconstruction
    assert (out - case["output_plain"]).abs().max() <= 1e-4


@pytest.mark.parametrize("preset", ["ramit-sr-x2", "ramit-slimlle", "ramit-gray-dn", "ramit1-sr-x4"])
def test_bmm_path_equals_the_faithful_path_with_a_learnt_bias_and_a_batch(preset):
    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig.from_preset(preset)).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "relative_position_bias_table"):
                module.relative_position_bias_table.normal_(0, 0.5)  # fresh tables are zero
        x = torch.rand(2, model.config.num_channels, 64, 96)
        model.set_attention_backend("faithful")
        reference = model(x).reconstruction
        model.set_attention_backend("fused")
        for chunk in (0, 5, 64):
            model.set_window_attention("bmm", chunk)
            assert (model(x).reconstruction - reference).abs().max() < 1e-4


def test_window_attention_kind_is_checked():
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-slimlle"))
    with pytest.raises(ValueError, match="'bmm' or 'sdpa'"):
        model.set_window_attention("flash")


def _crops(test_set, size=96):
    images = []
    for sample in test_set:
        image = sample.pixel_values
        top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
        images.append(image[:, top : top + size, left : left + size])
    return images


def test_bfloat16_body_within_the_bounds_on_real_images():
    # RAMiT-slimSR x2 has the largest bf16 error of the released SR checkpoints (scripts/bf16_quality.py)
    reference = convert_original_checkpoint(shared_path("reference", "checkpoints", "RAMiT-slimSR_X2.pth")).eval()
    low = Compute(torch.bfloat16, "bmm", "test").apply(copy.deepcopy(reference))
    assert (
        low.ramit.shallow.weight.dtype == torch.float32 and low.reconstruction.final_conv.weight.dtype == torch.float32
    )
    assert low.ramit.stages[0].blocks[0].qkv.weight.dtype == torch.bfloat16
    protocol = Protocol("sr-x2")
    set5 = load_test_set(shared_path("testsets", "Set5"), protocol)
    set14 = load_test_set(shared_path("testsets", "Set14"), protocol)
    for image in _crops(set5) + _crops(set14):
        a, b = restore_whole(reference, image[None]), restore_whole(low, image[None])
        assert b.dtype == torch.float32
        assert ((a - b).norm() / a.norm()).item() <= 1e-2
    base = evaluate_model(reference, set5, progress=False).mean_psnr
    assert abs(evaluate_model(low, set5, progress=False).mean_psnr - base) <= 0.05


def test_choose_compute_takes_a_requested_dtype_and_decides_auto_by_the_cpu():
    assert choose_compute("cpu", "float32") == Compute(torch.float32, "bmm", "as requested")
    auto = choose_compute("cpu", "auto")
    assert auto.dtype == (torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32)
    assert "auto" in auto.describe() and str(auto.dtype).removeprefix("torch.") in auto.describe()
    assert choose_compute("cuda", "auto").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        choose_compute("cpu", "float8")


def test_pipeline_precision_auto_applies_the_choice():
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-slimlle"))
    pipe = ImageRestorationPipeline(model=model, device="cpu", precision="auto")
    assert pipe.compute == choose_compute("cpu", "auto")
    assert pipe.model.ramit.stages[0].blocks[0].qkv.weight.dtype == pipe.compute.dtype
    out = pipe(torch.rand(3, 40, 40), output_type="np")
    assert out.shape == (40, 40, 3)
