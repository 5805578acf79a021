"""Data sets: embedded defaults (see ``list_datasets``) and the user's own files."""

from aigc.data.parallel import ParallelCorpus, load_parallel_corpus
from aigc.data.registry import DatasetInfo, list_datasets
from aigc.data.text import TextCorpus, load_text_corpus

__all__ = [
    "DatasetInfo",
    "ParallelCorpus",
    "TextCorpus",
    "list_datasets",
    "load_parallel_corpus",
    "load_text_corpus",
]
