import numpy as np
import pytest
import torch
from conftest import golden_case, golden_index, golden_model, run_without_ramit_hf, shared_path, small_config
from PIL import Image

from ramit_hf import RamitConfig, RamitForImageRestoration, RamitImageProcessor, RamitModel
from ramit_hf.convert import processor_for, save_model_folder
from ramit_hf.modeling_ramit import relative_position_index

GOLDEN_CASES = sorted(golden_index())
# The faithful computation is pinned to the original at 1e-5; the others compute the same function in another order.
TOLERANCE = {"faithful": 1e-5, "fused": 1e-4, "banded": 1e-4}


@pytest.mark.parametrize("backend", ["faithful", "fused", "banded"])
@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_outputs_of_the_original(name, backend):
    model = golden_model(name)
    model.set_computation(backend)
    case = golden_case(name)
    x = case["input"]
    with torch.no_grad():
        plain = model(x).reconstruction
        processor = processor_for(model.config)
        batch = processor(images=x[0], do_rescale=False, input_data_format="channels_first", return_tensors="pt")
        padded = model(batch["pixel_values"]).reconstruction
    protocol = processor.postprocess(padded, batch["original_sizes"], output_type="pt")[0]

    assert plain.shape == case["output_plain"].shape
    assert (plain - case["output_plain"]).abs().max() <= TOLERANCE[backend]
    # the protocol output is compared before clamping: clamp the reference alike
    reference = case["output_protocol"][0].clamp(0, 1)
    assert protocol.shape == reference.shape
    assert (protocol - reference).abs().max() <= TOLERANCE[backend]


def test_processor_padding_is_the_papers_protocol():
    x = golden_case("RAMiT-1_X2")["input"]
    padded = RamitImageProcessor()(images=x[0], do_rescale=False, return_tensors="pt")["pixel_values"]
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 64 - 45), (0, 64 - 61)), mode="symmetric")
    assert torch.equal(padded, torch.from_numpy(expected))


@pytest.fixture(scope="module")
def slim_model():
    return golden_model("RAMiT-slimSR_X2")


def test_save_and_from_pretrained_give_bit_identical_outputs(slim_model, tmp_path):
    folder = save_model_folder(slim_model, tmp_path / "model")
    loaded = RamitForImageRestoration.from_pretrained(folder)
    x = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(slim_model(x).reconstruction, loaded(x).reconstruction)
    # non-persistent buffers are rebuilt, not left uninitialised
    for module in loaded.modules():
        if hasattr(module, "relative_position_index"):
            assert torch.equal(module.relative_position_index, relative_position_index(8))
    assert torch.equal(loaded.ramit.image_mean.flatten(), torch.tensor(loaded.config.image_mean))
    assert torch.equal(loaded.ramit.image_std.flatten(), torch.tensor(loaded.config.image_std))


def test_trust_remote_code_in_a_fresh_process_without_ramit_hf(slim_model, tmp_path):
    folder = save_model_folder(slim_model, tmp_path / "model")
    x = torch.rand(1, 3, 40, 29, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(slim_model(x).reconstruction, tmp_path / "expected.pt")
    result = run_without_ramit_hf(
        f"""
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageToImage
        model = AutoModelForImageToImage.from_pretrained({str(folder)!r}, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(processor).__name__ == "RamitImageProcessor", type(processor)
        x = torch.load({str(tmp_path / "x.pt")!r})
        with torch.no_grad():
            out = model(x).reconstruction
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.equal(out, expected), (out - expected).abs().max()
        print("remote code OK", type(model).__module__)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK transformers_modules" in result.stdout


def test_any_input_size_is_padded_and_cropped():
    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config()).eval()
    for height, width in [(1, 1), (1, 40), (33, 7), (64, 64)]:
        with torch.no_grad():
            out = model(torch.rand(1, 3, height, width)).reconstruction
        assert out.shape == (1, 3, 2 * height, 2 * width)


def test_restoration_task_adds_the_input_back():
    # with a zeroed head, a restoration model returns its input exactly (global residual, normalisation undone)
    model = RamitForImageRestoration(small_config(upscale=1)).eval()
    torch.nn.init.zeros_(model.reconstruction.final_conv.weight)
    torch.nn.init.zeros_(model.reconstruction.final_conv.bias)
    x = torch.rand(1, 3, 20, 30)
    with torch.no_grad():
        assert torch.allclose(model(x).reconstruction, x, atol=1e-6)


def test_loss_is_l1_and_labels_are_checked():
    model = RamitForImageRestoration(small_config())
    x, labels = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    out = model(x, labels=labels)
    assert torch.allclose(out.loss, (out.reconstruction - labels).abs().mean())
    loss, reconstruction = model(x, labels=labels, return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(reconstruction, out.reconstruction)
    with pytest.raises(ValueError, match="labels must match"):
        model(x, labels=torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, height, width\)"):
        model(torch.rand(3, 16, 16))


def test_hidden_states_and_the_base_model():
    config = small_config()
    model = RamitModel(config)
    out = model(torch.rand(1, 3, 30, 30), output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, config.embed_dim, 32, 32)
    assert [h.shape[-1] for h in out.hidden_states] == [32, 32, 16, 8, 32]


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config())
    x, labels = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 32, 32)
    model(x, labels=labels).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model.train()
    model(x, labels=labels).loss.backward()
    for before, after in zip(plain, (p.grad for p in model.parameters()), strict=True):
        assert torch.allclose(before, after, atol=1e-6)


def test_fresh_weights_follow_pytorch_defaults():
    model = RamitForImageRestoration(RamitConfig.from_preset("ramit-sr-x2"))
    attention = model.ramit.stages[0].blocks[0].spatial_attention
    assert torch.allclose(attention.logit_scale, torch.full_like(attention.logit_scale, np.log(10)))
    assert torch.count_nonzero(attention.relative_position_bias_table) == 0
    conv = model.ramit.stages[0].blocks[0].qkv
    bound = 1 / np.sqrt(conv.weight.shape[1])
    assert conv.weight.abs().max() <= bound and conv.weight.std() > bound / 3


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(upscale=3, mobivari_version=1),
        dict(upscale=1, num_channels=1, image_mean=(0.45,), image_std=(0.23,), reciprocal_helper=False),
        dict(channel_head_ratio=0.0),
        dict(channel_head_ratio=1.0),
    ],
)
def test_fused_path_computes_the_faithful_function_and_gradients(overrides):
    torch.manual_seed(0)
    model = RamitForImageRestoration(small_config(**overrides))
    with torch.no_grad():  # non-trivial attention: random bias tables and logit scales
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name or "logit_scale" in name:
                parameter.normal_(0, 0.5)
    channels = model.config.num_channels
    x = torch.rand(2, channels, 27, 40)
    labels = torch.rand(2, channels, 27 * model.config.upscale, 40 * model.config.upscale)
    results = {}
    for backend in ("faithful", "fused"):
        model.set_computation(backend)
        model.zero_grad()
        out = model(x, labels=labels, output_hidden_states=True)
        out.loss.backward()
        results[backend] = (out, {n: p.grad.clone() for n, p in model.named_parameters()})
    (faithful, grads), (fused, fused_grads) = results["faithful"], results["fused"]
    assert (faithful.reconstruction - fused.reconstruction).abs().max() < 1e-4
    assert all(a.shape == b.shape for a, b in zip(faithful.hidden_states, fused.hidden_states, strict=True))
    for name, grad in grads.items():
        assert torch.allclose(grad, fused_grads[name], rtol=1e-3, atol=1e-5), name


def test_bfloat16_fused_path_stays_close_to_the_faithful_float32_path(slim_model):
    # a real image (bf16 keeps 8 mantissa bits: through ~100 layers the error is about 1% on noise-like inputs)
    bird = Image.open(shared_path("testsets", "Set5", "LR_bicubic", "X2", "birdx2.png")).convert("RGB")
    x = torch.from_numpy(np.asarray(bird, dtype=np.float32) / 255).permute(2, 0, 1)[None, :, :96, :96].contiguous()
    slim_model.set_computation("faithful")
    with torch.no_grad():
        reference = slim_model(x).reconstruction
        slim_model.set_computation("auto")
        low = slim_model.to(torch.bfloat16)(x.to(torch.bfloat16)).reconstruction.float()
    slim_model.float()
    assert ((low - reference).norm() / reference.norm()).item() < 1e-2
