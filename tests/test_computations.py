"""The computations of RAMiT (faithful, fused, banded), the one place that picks among them for a call
(`resolve_computation`), the bfloat16 body, and the precision `choose_compute` picks."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import golden_case, golden_index, golden_model, shared_path, small_config
from torch.utils._python_dispatch import TorchDispatchMode

from ramit_hf import RamitConfig, RamitForImageRestoration, convert_original_checkpoint
from ramit_hf.banded_ramit import WINDOW_ORDERS_KEPT, ShuffledConcat, SpaceToDepth, TensorRows, _window_order
from ramit_hf.forward import restore_whole
from ramit_hf.inference import Compute, choose_compute, cpu_has_native_bfloat16
from ramit_hf.modeling_ramit import resolve_computation
from ramit_hf.pipeline_image_restoration import ImageRestorationPipeline
from ramit_hf.protocol import Protocol, load_test_set
from ramit_hf.protocol.metrics import psnr, to_uint8


@pytest.mark.parametrize("name", sorted(golden_index()))
def test_banded_pieces_that_do_not_divide_the_image_match_the_original(name):
    model = golden_model(name)
    model.set_computation("banded")
    model.config.banded_piece_windows = 3  # pieces of 3 windows: bands of a row or two, with halos
    case = golden_case(name)
    with torch.no_grad():
        out = model(case["input"]).reconstruction
    assert (out - case["output_plain"]).abs().max() <= 1e-4


@pytest.mark.parametrize("preset", ["ramit-sr-x2", "ramit-slimlle", "ramit-gray-dn", "ramit1-sr-x4"])
def test_fused_and_banded_equal_faithful_with_a_learnt_bias_and_a_batch(preset):
    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig.from_preset(preset)).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "relative_position_bias_table"):
                module.relative_position_bias_table.normal_(0, 0.5)  # fresh tables are zero
        x = torch.rand(2, model.config.num_channels, 64, 96)
        model.set_computation("faithful")
        reference = model(x).reconstruction
        model.set_computation("fused")
        assert (model(x).reconstruction - reference).abs().max() < 1e-4
        model.set_computation("banded")
        for windows in (0, 5, 64):
            model.config.banded_piece_windows = windows
            assert (model(x).reconstruction - reference).abs().max() < 1e-4


def test_banded_computes_blocks_without_spatial_heads():
    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config(channel_head_ratio=1.0)).eval()
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        model.set_computation("faithful")
        reference = model(x).reconstruction
        model.set_computation("banded")
        assert (model(x).reconstruction - reference).abs().max() < 1e-4


def test_auto_picks_banded_only_for_cpu_inference():
    assert resolve_computation("auto", "cpu", training=False) == "banded"
    assert resolve_computation("auto", "cpu", training=True) == "fused"
    for device in ("cuda", "cuda:1", "mps", "xpu", "meta"):
        assert resolve_computation("auto", device, training=False) == "fused"
        assert resolve_computation("auto", device, training=True) == "fused"
    for explicit in ("faithful", "fused"):
        assert resolve_computation(explicit, "cuda", training=True) == explicit
    with pytest.raises(ValueError, match="'banded' computation is for CPU inference only, not a cuda device"):
        resolve_computation("banded", "cuda", training=False)
    with pytest.raises(ValueError, match="'banded' computation is for CPU inference only, not training"):
        resolve_computation("banded", "cpu", training=True)
    with pytest.raises(ValueError, match="unknown computation 'bmm'"):
        resolve_computation("bmm", "cpu", training=False)


def test_the_model_says_which_computation_its_next_call_runs():
    model = RamitForImageRestoration(small_config()).eval()
    assert model.config.computation == "auto"
    with torch.no_grad():
        assert model.computation == "banded"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.computation == "fused"
        model.train()
        assert model.computation == "fused"
        model.eval()
    assert model.computation == "fused"  # gradients recorded
    model.set_computation("faithful")
    assert model.computation == "faithful"
    with pytest.raises(ValueError, match="unknown computation 'flash'"):
        model.set_computation("flash")


class _CountOperators(TorchDispatchMode):
    """Counts the ATen operators a piece of code issues: on an accelerator each is a kernel launch."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _operators(model, size: int, grad: bool = False) -> int:
    model.zero_grad()  # a backward into existing gradients would add instead of assign
    x = torch.rand(1, 3, size, size)
    with torch.set_grad_enabled(grad), _CountOperators() as counter:
        out = model(x).reconstruction
        if grad:
            out.mean().backward()
    return counter.count


def test_the_accelerator_computation_issues_as_many_operators_at_any_image_size():
    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-slimsr-x2")).eval()
    # what "auto" runs on a GPU, forced here on CPU tensors
    model.set_computation(resolve_computation("auto", "cuda", training=False))
    assert _operators(model, 64) == _operators(model, 128)
    # the banded computation's count grows with the image: the counter sees the difference
    model.set_computation("banded")
    assert _operators(model, 128) > 1.5 * _operators(model, 64)


def test_training_never_takes_the_banded_computation():
    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config()).train()
    assert model.computation == "fused"
    assert _operators(model, 64, grad=True) == _operators(model, 96, grad=True)
    with torch.no_grad():  # validation inside a training loop, without .eval()
        assert model.computation == "fused"
    assert _operators(model, 64) == _operators(model, 96)
    model.set_computation("banded")
    with pytest.raises(ValueError, match="CPU inference only"):
        model(torch.rand(1, 3, 32, 32))


def test_window_orders_stay_bounded_over_many_image_sizes():
    model = RamitForImageRestoration(small_config()).eval()
    _window_order.cache_clear()
    with torch.no_grad():
        for size in range(40):  # 40 padded sizes, from 32 x 32 to 256 x 160
            model(torch.rand(1, 3, 32 * (1 + size % 8), 32 * (1 + size // 8)))
    info = _window_order.cache_info()
    assert info.misses > WINDOW_ORDERS_KEPT  # more sizes were seen than are kept
    assert info.currsize <= WINDOW_ORDERS_KEPT


def _crops(test_set, scale=2, size=64):
    """Centre crops of the inputs and the matching crops of the targets."""
    crops = []
    for sample in test_set:
        image = sample.pixel_values
        top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
        target = sample.target[scale * top : scale * (top + size), scale * left : scale * (left + size)]
        crops.append((image[:, top : top + size, left : left + size], target))
    return crops


def test_bfloat16_body_within_the_bounds_on_real_images():
    # RAMiT-slimSR x2 has the largest bf16 error of the released SR checkpoints (scripts/bf16_quality.py, which
    # also scores whole Set5 images; crops keep this test quick on CPUs that emulate bfloat16)
    reference = convert_original_checkpoint(shared_path("reference", "checkpoints", "RAMiT-slimSR_X2.pth")).eval()
    low = Compute(torch.bfloat16, "banded", "test").apply(copy.deepcopy(reference))
    assert low.config.computation == "auto"
    assert (
        low.ramit.shallow.weight.dtype == torch.float32 and low.reconstruction.final_conv.weight.dtype == torch.float32
    )
    assert low.ramit.stages[0].blocks[0].qkv.weight.dtype == torch.bfloat16
    protocol = Protocol("sr-x2")
    set5 = _crops(load_test_set(shared_path("testsets", "Set5"), protocol))
    set14 = _crops(load_test_set(shared_path("testsets", "Set14"), protocol))[:3]  # bfloat16 is emulated on most CPUs
    gaps = []
    for index, (image, target) in enumerate(set5 + set14):
        a, b = restore_whole(reference, image[None]), restore_whole(low, image[None])
        assert b.dtype == torch.float32
        assert ((a - b).norm() / a.norm()).item() <= 1e-2
        if index < len(set5):
            scores = [
                psnr(to_uint8(out[0].permute(1, 2, 0)), target, crop_border=2, test_y_channel=True) for out in (a, b)
            ]
            gaps.append(scores[1] - scores[0])
    assert abs(sum(gaps) / len(gaps)) <= 0.05


def test_choose_compute_takes_a_requested_dtype_and_decides_auto_by_the_cpu():
    assert choose_compute("cpu", "float32") == Compute(torch.float32, "banded", "as requested")
    auto = choose_compute("cpu", "auto")
    assert auto.dtype == (torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32)
    assert "auto" in auto.describe() and str(auto.dtype).removeprefix("torch.") in auto.describe()
    assert "banded computation" in auto.describe()
    assert choose_compute("cuda", "auto") == Compute(torch.float32, "fused", "auto: float32 on accelerators")
    assert choose_compute("cpu", "auto", "faithful").computation == "faithful"
    with pytest.raises(ValueError, match="unknown dtype"):
        choose_compute("cpu", "float8")


def test_pipeline_precision_auto_applies_the_choice():
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-slimlle"))
    pipe = ImageRestorationPipeline(model=model, device="cpu", precision="auto")
    assert pipe.compute == choose_compute("cpu", "auto")
    assert pipe.model.ramit.stages[0].blocks[0].qkv.weight.dtype == pipe.compute.dtype
    out = pipe(torch.rand(3, 40, 40), output_type="np")
    assert out.shape == (40, 40, 3)


def _faithful_and_banded(model, x, **kwargs):
    model.set_computation("faithful")
    reference = model(x, **kwargs)
    model.set_computation("banded")
    model.config.banded_piece_windows = 4  # pieces of 4 windows: bands of a few rows, with halos
    return reference, model(x, **kwargs)


def test_banded_path_keeps_every_stage_output_and_follows_weight_changes():
    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-sr-x2")).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        reference, banded = _faithful_and_banded(model.ramit, x, output_hidden_states=True)
        # the stage outputs are tensors of their own, not workspace buffers that later blocks overwrote
        assert len(banded.hidden_states) == len(reference.hidden_states) == 5
        for expected, got in zip(reference.hidden_states, banded.hidden_states, strict=True):
            assert (expected - got).abs().max() < 1e-4
        # weights prepared for the banded path follow in-place updates and loaded state dicts
        other = RamitForImageRestoration(RamitConfig.from_preset("ramit-sr-x2")).eval()
        for module in other.modules():
            if hasattr(module, "relative_position_bias_table"):
                module.relative_position_bias_table.normal_(0, 0.5)
        model.load_state_dict(other.state_dict())
        reference, banded = _faithful_and_banded(model, x)
        assert (reference.reconstruction - banded.reconstruction).abs().max() < 1e-4
        model.ramit.stages[0].blocks[0].qkv.weight.mul_(1.5)
        reference, banded = _faithful_and_banded(model, x)
        assert (reference.reconstruction - banded.reconstruction).abs().max() < 1e-4


def test_banded_path_is_safe_from_several_threads():
    # the workspace of full-size buffers is per thread: concurrent calls (a Space serving two users) do not mix
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-slimlle")).eval()
    images = [torch.rand(1, 3, 48, 48) for _ in range(4)]
    with torch.no_grad():
        expected = [model(x).reconstruction for x in images]
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda x: model(x).reconstruction, images * 2))
    for i, out in enumerate(got):
        assert (out - expected[i % 4]).abs().max() < 1e-5  # worker threads split reductions differently


def test_autocast_takes_the_fused_computation():
    # autocast (bf16 validation during training) changes output dtypes, which the fused computation follows
    torch.manual_seed(0)
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-slimlle")).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(x).reconstruction
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.computation == "fused"
            low = model(x).reconstruction.float()
    assert ((low - reference).norm() / reference.norm()).item() < 2e-2


def test_band_sources_read_the_rows_of_the_tensors_they_stand_for():
    # Bottleneck, H-RAMi and Downsizing read their inputs a band at a time; any band, edges and odd splits included
    torch.manual_seed(0)
    full, half, quarter = torch.rand(2, 24, 16, 8), torch.rand(2, 12, 8, 8), torch.rand(2, 6, 4, 32)
    parts = [(full, 1), (half, 2), (quarter, 4)]
    # the reference built with torch's own pixel shuffle, on (B, C, H, W)
    concat = torch.cat([F.pixel_shuffle(t.permute(0, 3, 1, 2), f).permute(0, 2, 3, 1) for t, f in parts], dim=-1)
    norm = torch.nn.LayerNorm(32)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        neighbourhoods = torch.cat(
            [full[:, 0::2, 0::2], full[:, 0::2, 1::2], full[:, 1::2, 0::2], full[:, 1::2, 1::2]], -1
        )
        downsized = norm(neighbourhoods)
        for source, expected in ((ShuffledConcat(parts), concat), (SpaceToDepth(full, norm), downsized)):
            sliced = TensorRows(expected)
            assert source.shape == sliced.shape == tuple(expected.shape)
            for i in range(2):
                for low, high in (
                    (0, 1),
                    (0, expected.shape[1]),
                    (3, 6),
                    (5, 11),
                    (expected.shape[1] - 1, expected.shape[1]),
                ):
                    assert torch.equal(source.rows(i, low, high), expected[i, low:high])
                    assert torch.equal(sliced.rows(i, low, high), expected[i, low:high])
