"""certiqa: provably robust no-reference image-quality assessment."""

from .smoothing import CertifiedScores, SmoothedIQA, certified_radius_samples, certify_samples

__version__ = "0.2.0"

__all__ = ["SmoothedIQA", "CertifiedScores", "certify_samples", "certified_radius_samples", "__version__"]
