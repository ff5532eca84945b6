"""NR-IQA models that ship with certiqa."""

from .cnniqa import CNNIQA, rgb_to_luma

__all__ = ["CNNIQA", "rgb_to_luma"]
