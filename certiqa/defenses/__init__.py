"""Defenses of IQA models that are not certified: input purifications (JPEG, blur,
median, resizing, bit depth, random resize + pad, random rotation) with the
:class:`Purified` wrapper and its BPDA / EOT handling, and NT (norm regularisation
training, :mod:`certiqa.defenses.nt`). The certified defense is
:class:`certiqa.SmoothedIQA`."""

from . import nt
from .purification import (
    JPEG,
    BitDepth,
    ExpectedPurifiedScore,
    GaussianBlur,
    MedianFilter,
    Purification,
    Purified,
    RandomPurification,
    RandomResizePad,
    RandomRotation,
    ResizeDownUp,
    bpda,
    default_purifications,
)

__all__ = ["nt", *purification.__all__]
