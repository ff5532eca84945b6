"""Training routines. :mod:`certiqa.training.finetune` fine-tunes an NR-IQA model under the
noise it will be smoothed with (a *student* of its frozen original, the *teacher*);
:mod:`certiqa.training.photos` gives the redistributable training photographs."""

from .finetune import FinetuneConfig, FinetuneResult, finetune, finetune_losses, save_student
from .photos import PHOTO_SOURCES, load_photos

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "finetune_losses",
    "save_student",
    "PHOTO_SOURCES",
    "load_photos",
]
