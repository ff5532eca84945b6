"""certiqa: provably robust no-reference image-quality assessment."""

from .smoothing import CertifiedScores, SmoothedIQA

__version__ = "0.1.0"

__all__ = ["SmoothedIQA", "CertifiedScores", "__version__"]
