"""The default NR-IQA model embedded in the package.

A CNNIQA (the original architecture: 50 kernels, 800 hidden units, 2.9 MB)
trained by ``examples/train_default_model.py`` (see
:mod:`certiqa.models.default_training`) on synthetically distorted
public-domain/CC0 photographs bundled with scikit-image: L1 regression to 100 x
SSIM to the pristine crop plus a ranking loss over distortion levels of the same
crop. Scores lie nominally in [0, 100] and higher means better quality. It is a
demonstration-grade model, not a state-of-the-art IQA metric.
"""

from __future__ import annotations

from pathlib import Path

from .cnniqa import CNNIQA

__all__ = ["DEFAULT_CONFIG", "DEFAULT_WEIGHTS", "default_model"]

# Everything needed to rebuild the architecture of the shipped weights.
DEFAULT_CONFIG: dict = {"kernels": 50, "hidden": 800, "lower_better": False, "score_range": (0.0, 100.0)}
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "default_cnniqa.pt"


def default_model() -> CNNIQA:
    """Load the embedded default model (CPU, eval mode), with ``lower_better=False``
    and ``score_range=(0, 100)``."""
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the default model's weights are missing from the installed package ({DEFAULT_WEIGHTS}); "
            "reinstall certiqa, or pass --weights / build a CNNIQA from your own file."
        )
    return CNNIQA.from_file(DEFAULT_WEIGHTS, **DEFAULT_CONFIG)
