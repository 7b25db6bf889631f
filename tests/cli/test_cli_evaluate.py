import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import checkpoint, shared_path

from ramit_hf.cli import main
from ramit_hf.protocol import load_result

# Set5 x4 with RAMiT-1 through the original implementation: mean Y-PSNR 32.537 dB, Y-SSIM 0.8987
REFERENCE_PSNR, REFERENCE_SSIM = 32.537, 0.8987
SET5_NAMES = ["baby", "bird", "butterfly", "head", "woman"]


def test_evaluate_set5_x4_matches_the_original(tmp_path, capsys):
    output, images = tmp_path / "set5_x4.json", tmp_path / "restored"
    args = [
        "evaluate",
        "--model",
        str(checkpoint("RAMiT-1_X4.pth")),
        "--dataset",
        str(shared_path("testsets", "Set5")),
        "--output",
        str(output),
        "--save-images",
        str(images),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "| image | PSNR (dB) | SSIM |" in captured.out and "| **mean (5)** |" in captured.out
    assert "Set5 sr-x4" in captured.err  # the progress bar
    assert f"results -> {output}" in captured.out

    result = load_result(output)
    assert abs(result.mean_psnr - REFERENCE_PSNR) < 0.01 and abs(result.mean_ssim - REFERENCE_SSIM) < 1e-4
    assert [image.name for image in result.images] == SET5_NAMES
    assert result.model["id"] == "RAMiT-1_X4" and result.model["variant"] == "RAMiT-1"
    assert result.protocol["crop_border"] == 4 and result.protocol["metric_channel"] == "Y"
    assert result.dataset["input"] == {"kind": "lr-folder", "source": "LR_bicubic/X4"}
    assert sorted(p.name for p in images.iterdir()) == [f"{n}.png" for n in SET5_NAMES]

    # no silent overwrite: nothing is run and the file stays as it was
    before = output.read_text()
    assert main([*args, "--no-progress"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert output.read_text() == before


def test_evaluate_json_in_a_real_subprocess():
    ramit = Path(sys.executable).parent / "ramit"  # the installed console script
    completed = subprocess.run(
        [
            str(ramit),
            "evaluate",
            "--model",
            str(checkpoint("RAMiT-1_X4.pth")),
            "--dataset",
            str(shared_path("testsets", "Set5")),
            "--json",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout)  # stdout is the JSON alone
    assert data["schema"] == "ramit-hf/evaluation" and data["dataset"]["name"] == "Set5"
    assert abs(data["mean"]["psnr"] - REFERENCE_PSNR) < 0.01
    assert len(data["images"]) == 5


def test_evaluate_errors_are_reported_with_exit_status_2(tmp_path, capsys):
    model = str(checkpoint("RAMiT-1_CDN.pth"))
    mcmaster = str(shared_path("testsets", "McMaster"))
    assert main(["evaluate", "--model", model, "--dataset", mcmaster]) == 2
    assert "ramit evaluate: error: " in (err := capsys.readouterr().err) and "pass --sigma" in err
    assert main(["evaluate", "--model", model, "--dataset", str(tmp_path / "nowhere"), "--sigma", "25"]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "missing.pth"), "--dataset", mcmaster, "--sigma", "25"]) == 2
    assert "ramit evaluate: error:" in capsys.readouterr().err
    sr_model = str(checkpoint("RAMiT-1_X2.pth"))
    assert main(["evaluate", "--model", sr_model, "--dataset", mcmaster, "--sigma", "25"]) == 2
    assert "sigma applies to denoising only" in capsys.readouterr().err
    assert main(["evaluate", "--model", sr_model, "--task", "sr-x3", "--dataset", mcmaster]) == 2
    assert "ramit evaluate: error: " in capsys.readouterr().err
