"""Data sets: embedded defaults (see ``list_datasets``) and the user's own files."""

from aigc.data.parallel import ParallelCorpus, load_parallel_corpus
from aigc.data.registry import DatasetInfo, list_datasets
from aigc.data.text import TextCorpus, load_text_corpus

# Image names load on first use: `aigc.data.images` imports torch, which `aigc data list` does not need.
_IMAGE_NAMES = ("ImageBatches", "ImageDataset", "from_model_range", "load_image_dataset", "to_model_range")


def __getattr__(name: str):
    if name in _IMAGE_NAMES:
        from aigc.data import images
        return getattr(images, name)
    raise AttributeError(f"module 'aigc.data' has no attribute {name!r}")


__all__ = [
    "DatasetInfo",
    "ImageBatches",
    "ImageDataset",
    "ParallelCorpus",
    "TextCorpus",
    "from_model_range",
    "list_datasets",
    "load_image_dataset",
    "load_parallel_corpus",
    "load_text_corpus",
    "to_model_range",
]
