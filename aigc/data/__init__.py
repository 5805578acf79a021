"""Data sets: embedded defaults (see ``list_datasets``) and the user's own files."""

from aigc.data.registry import DatasetInfo, list_datasets
from aigc.data.text import TextCorpus, load_text_corpus

__all__ = ["DatasetInfo", "TextCorpus", "list_datasets", "load_text_corpus"]
