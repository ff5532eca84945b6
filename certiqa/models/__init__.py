"""NR-IQA models that ship with certiqa."""

from .cnniqa import CNNIQA, rgb_to_luma
from .default import DEFAULT_CONFIG, default_model

__all__ = ["CNNIQA", "rgb_to_luma", "DEFAULT_CONFIG", "default_model"]
