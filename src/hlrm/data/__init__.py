"""Data: readers, named datasets, preprocessing, splits and the interaction-matrix type."""

from hlrm.data.matrix import IdMap, SplitData, binary_csr
from hlrm.data.pipeline import DataConfig, describe, load_split
from hlrm.data.preprocess import apply_threshold, collapse_duplicates, filter_core, reindex
from hlrm.data.readers import FORMATS, read_interactions, read_titles
from hlrm.data.registry import DatasetSpec, get_dataset, list_datasets, resolve_files
from hlrm.data.splits import SPLITS, split_interactions
from hlrm.data.synthetic import make_synthetic

__all__ = [
    "FORMATS",
    "SPLITS",
    "DataConfig",
    "DatasetSpec",
    "IdMap",
    "SplitData",
    "apply_threshold",
    "binary_csr",
    "collapse_duplicates",
    "describe",
    "filter_core",
    "get_dataset",
    "list_datasets",
    "load_split",
    "make_synthetic",
    "read_interactions",
    "read_titles",
    "reindex",
    "resolve_files",
    "split_interactions",
]
