"""``ramit_image_quality``: PSNR and SSIM for image restoration, as a Hugging Face ``evaluate`` metric.

This file is only the ``evaluate`` interface; the numbers come from ``ramit_hf.protocol.metrics`` (imported
from the installed package, so it also works from evaluate's module cache). Load it offline with
``ramit_hf.protocol.metrics.load_evaluate_metric()``.
"""

import datasets
import evaluate
import numpy as np

from ramit_hf.protocol.metrics import psnr, ssim

_DESCRIPTION = """\
PSNR (dB) and SSIM between restored images and their ground truth, with the conventions of the
super-resolution / restoration literature (RAMiT, SwinIR, BasicSR): 8-bit values in [0, 255], RGB or
gray, optional border crop, optional evaluation on the BT.601 luma (Y) channel, float64 arithmetic,
SSIM with an 11x11 Gaussian window (sigma 1.5) on the valid region, per-channel SSIM averaged.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: restored images, one per example: PIL images, uint8 HW/HWC RGB arrays, or
        float HWC arrays already rounded to 8-bit values in [0, 255] (round a model's [0, 1] output
        with `ramit_hf.protocol.metrics.to_uint8` first). Uint8 arrays and PIL images are much faster than
        float arrays (stored as PNG rather than as nested lists). Use one kind per call.
    references: ground-truth images, same shapes as the predictions.
    crop_border (int, default 0): pixels removed from every side before measuring (SR: the scale).
    test_y_channel (bool, default False): measure colour images on the Y channel of YCbCr.
Returns:
    psnr: mean PSNR in dB (inf if every pair is identical),
    ssim: mean SSIM,
    psnr_per_image, ssim_per_image: the values for each pair, in input order.
Examples:
    >>> from ramit_hf.protocol.metrics import load_evaluate_metric
    >>> metric = load_evaluate_metric()
    >>> result = metric.compute(predictions=[sr], references=[hr], crop_border=4, test_y_channel=True)
"""

_CITATION = """\
@article{wang2004ssim,
  title={Image quality assessment: from error visibility to structural similarity},
  author={Wang, Zhou and Bovik, Alan C. and Sheikh, Hamid R. and Simoncelli, Eero P.},
  journal={IEEE Transactions on Image Processing}, volume={13}, number={4}, pages={600--612}, year={2004}
}
"""

# PIL modes that hold 8-bit-valued data: 8-bit gray, 8-bit RGB, and 32-bit float gray (from float arrays).
_ACCEPTED_MODES = ("L", "RGB", "F")


def _nested(depth: int) -> datasets.Sequence:
    feature = datasets.Value("float64")
    for _ in range(depth):
        feature = datasets.Sequence(feature)
    return feature


def _to_array(image, name: str, index: int) -> np.ndarray:
    """A decoded column entry (PIL image or nested list) as a numpy array."""
    mode = getattr(image, "mode", None)
    if mode is not None and mode not in _ACCEPTED_MODES:
        raise ValueError(f"{name}[{index}] has PIL mode {mode!r}; convert it to 'RGB' or 'L' first")
    return np.asarray(image)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RamitImageQuality(evaluate.Metric):
    """PSNR / SSIM of image pairs (see the module's description)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Alternatives tried in order: images (PIL, uint8 arrays: any size, stored as PNG), then
            # float HWC arrays as nested lists (Array3D cannot hold images of varying height and width).
            features=[
                datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
                datasets.Features({"predictions": _nested(3), "references": _nested(3)}),
            ],
            reference_urls=["https://github.com/rami0205/RAMiT"],
        )

    def _compute(self, predictions, references, crop_border=0, test_y_channel=False):
        psnrs, ssims = [], []
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
            pred = _to_array(pred, "predictions", i)
            ref = _to_array(ref, "references", i)
            psnrs.append(psnr(pred, ref, crop_border=crop_border, test_y_channel=test_y_channel))
            ssims.append(ssim(pred, ref, crop_border=crop_border, test_y_channel=test_y_channel))
        if not psnrs:
            raise ValueError("ramit_image_quality needs at least one prediction/reference pair")
        return {
            "psnr": float(np.mean(psnrs)),
            "ssim": float(np.mean(ssims)),
            "psnr_per_image": psnrs,
            "ssim_per_image": ssims,
        }
