"""Model cards and Hub repository ids: the committed cards are what the evaluation JSON files give."""

import re

import pytest
import torch
from conftest import REPO_ROOT, checkpoint, small_config
from huggingface_hub import ModelCard

from ramit_hf import PRESETS, RamitConfig, RamitForImageRestoration
from ramit_hf.convert import infer_from_file_name
from ramit_hf.hub import (
    HUB_NAMESPACE,
    PUBLISHED_PRESETS,
    RELEASED_CHECKPOINTS,
    CardInfo,
    card_for_preset,
    hub_models,
    load_results,
    measure_complexity,
    original_checkpoint_name,
    render_model_card,
    repo_id_for,
    validate_repo_id,
)
from ramit_hf.protocol import load_result

RESULTS = REPO_ROOT / "results"
CARDS = REPO_ROOT / "model_cards"


def _card(preset: str) -> str:
    return (CARDS / preset / "README.md").read_text(encoding="utf-8")


def test_every_released_checkpoint_name_maps_to_its_preset():
    assert len(RELEASED_CHECKPOINTS) == len(PRESETS) == 15
    for name, preset in RELEASED_CHECKPOINTS.items():
        assert original_checkpoint_name(preset) == name
        assert infer_from_file_name(f"{name}.pth") == PRESETS[preset]  # the converter reads the same names
    assert RELEASED_CHECKPOINTS["RAMiT-1_X2"] == "ramit1-sr-x2"
    assert RELEASED_CHECKPOINTS["RAMiT-slimLLE_LLE"] == "ramit-slimlle"
    for preset in PUBLISHED_PRESETS:  # every published checkpoint is one we have
        assert checkpoint(f"{original_checkpoint_name(preset)}.pth").is_file()


def test_repository_ids():
    assert HUB_NAMESPACE == "ramit-hf"
    assert repo_id_for("ramit1-sr-x2") == "ramit-hf/ramit1-sr-x2"
    assert repo_id_for("ramit-slimlle", "someone") == "someone/ramit-slimlle"
    assert hub_models()["ramit-slimsr-x4"] == "ramit-hf/ramit-slimsr-x4"
    assert list(hub_models("org")) == list(PUBLISHED_PRESETS)
    assert validate_repo_id("me/my-model") == "me/my-model"
    for bad in ("no-namespace", "a/b/c", "me/bad name", "me/..x", "-me/x"):
        with pytest.raises(ValueError, match="not a"):
            validate_repo_id(bad)
    with pytest.raises(ValueError, match="unknown RAMiT preset"):
        original_checkpoint_name("ramit-sr-x5")


def test_committed_cards_are_generated_from_the_results():
    # model_cards/generate.py wrote them; a stale card (results or template changed since) fails here
    assert sorted(p.name for p in CARDS.iterdir() if p.is_dir()) == sorted(PUBLISHED_PRESETS)
    for preset in PUBLISHED_PRESETS:
        assert _card(preset) == card_for_preset(preset, RESULTS), f"{preset}: run python model_cards/generate.py"


def test_card_numbers_equal_the_evaluation_json():
    files = sorted(RESULTS.glob("*.json"))
    assert files, "no results/*.json"
    cards_checked = set()
    for path in files:
        result = load_result(path)
        preset = RELEASED_CHECKPOINTS[result.model["id"]]
        text = _card(preset)
        psnr, ssim = round(result.mean_psnr, 3), round(result.mean_ssim, 4)
        # model-index (YAML metadata), as the Hub parses it
        entries = [
            r
            for r in ModelCard(text).data.eval_results
            if r.dataset_name == result.dataset["name"]
            and r.dataset_config == (None if result.protocol["sigma"] is None else f"sigma{result.protocol['sigma']}")
        ]
        values = {r.metric_type: r.metric_value for r in entries}
        assert values == {"psnr": psnr, "ssim": ssim}, path.name
        assert {r.metric_name for r in entries} == {
            f"PSNR ({result.protocol['metric_channel']})",
            f"SSIM ({result.protocol['metric_channel']})",
        }
        # the results table
        sigma = "" if result.protocol["sigma"] is None else f" {result.protocol['sigma']} |"
        row = f"| {result.dataset['name']} |{sigma} {len(result.images)} | {psnr:.3f} | {ssim:.4f} |"
        assert row in text, f"{path.name}: {row!r} not in the {preset} card"
        cards_checked.add(preset)
    # and a card lists no result that has no JSON file
    for preset in PUBLISHED_PRESETS:
        results = load_results(RESULTS, original_checkpoint_name(preset))
        entries = ModelCard(_card(preset)).data.eval_results or []
        assert len(entries) == 2 * len(results)
    assert cards_checked >= {"ramit1-sr-x2", "ramit-slimsr-x2", "ramit1-color-dn"}


def test_card_metadata_and_sections():
    for preset in PUBLISHED_PRESETS:
        card = ModelCard(_card(preset))
        data = card.data
        _variant, task = PRESETS[preset]
        assert data.library_name == "transformers" and data.pipeline_tag == "image-to-image"
        assert data.license == "other" and data.license_link == "https://github.com/rami0205/RAMiT"
        expected_tag = {
            "sr-x2": "super-resolution",
            "sr-x3": "super-resolution",
            "sr-x4": "super-resolution",
            "color-dn": "denoising",
            "lle": "low-light-image-enhancement",
        }[task]
        assert {"image-restoration", expected_tag} <= set(data.tags)
        text = card.text
        for heading in ("## Model", "## Usage", "## Evaluation", "## Results", "## License", "## Citation"):
            assert heading in text
        assert f'pipeline("image-restoration", model="ramit-hf/{preset}", trust_remote_code=True)' in text
        assert f'pipeline("image-restoration", model="ramit-hf/{preset}")' in text
        assert "@inproceedings{choi2024reciprocal" in text and "Haram Choi" in text
        assert f"`{original_checkpoint_name(preset)}.pth`" in text
        params = sum(p.numel() for p in RamitForImageRestoration(RamitConfig.from_preset(preset)).parameters())
        assert f"| {params:,} |" in text
    slim_lle = ModelCard(_card("ramit-slimlle"))
    assert not slim_lle.data.eval_results
    assert "no low-light test set" in slim_lle.text and "no `model-index` entries" in slim_lle.text


def test_complexity_counts_matmuls_and_convolutions_like_a_real_forward():
    from torch.utils.flop_counter import FlopCounterMode

    config = small_config(computation="faithful")  # explicit matmuls: what the counter counts on any device
    measured = measure_complexity(small_config(), input_size=(40, 50))
    assert measured.padded_size == (64, 64) and measured.output_size == (80, 100)
    assert measured.macs * 2 == measured.flops
    torch.manual_seed(0)
    model = RamitForImageRestoration(config).eval()
    assert measured.parameters == sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # the meta-device count equals a real one
        model(torch.rand(1, 3, 40, 50))
    assert measured.flops == counter.get_total_flops() > 0


def test_complexity_input_sizes_give_a_1280x720_output():
    for preset, size in (
        ("ramit1-sr-x2", (360, 640)),
        ("ramit1-sr-x3", (240, 427)),
        ("ramit-slimsr-x4", (180, 320)),
        ("ramit-slimlle", (720, 1280)),
    ):
        from ramit_hf.hub import complexity_input_size

        assert complexity_input_size(RamitConfig.from_preset(preset)) == size


def test_a_card_refuses_results_of_another_task():
    results = load_results(RESULTS, "RAMiT-1_X2")
    assert results
    with pytest.raises(ValueError, match="is for task 'sr-x2', not 'sr-x4'"):
        render_model_card(RamitConfig.from_preset("ramit1-sr-x4"), results, CardInfo(repo_id="me/x4"))


def test_card_of_weights_trained_with_ramit_hf():
    config = small_config(task="sr-x2")
    card = render_model_card(config, [], CardInfo(repo_id="me/my-x2", trained_from="DIV2K, 10 epochs."))
    assert "trained with `ramit_hf`: DIV2K, 10 epochs." in card
    assert "authors' released weights" not in card and 'pipeline("image-restoration", model="me/my-x2"' in card
    assert "Not measured yet" in card
    assert re.search(r"^model_name: my-x2$", card, re.M)
