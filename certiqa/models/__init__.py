"""NR-IQA models that ship with certiqa, and the loader of any model from a spec string."""

from .cnniqa import CNNIQA, rgb_to_luma
from .default import DEFAULT_CONFIG, default_model
from .spec import MODEL_SPEC_HELP, LoadedModel, ModelSpecError, load_model, save_exported, save_scripted

__all__ = [
    "CNNIQA",
    "rgb_to_luma",
    "DEFAULT_CONFIG",
    "default_model",
    "MODEL_SPEC_HELP",
    "LoadedModel",
    "ModelSpecError",
    "load_model",
    "save_scripted",
    "save_exported",
]
