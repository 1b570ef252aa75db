"""Examples written once as a TFDS dataset in array_record format, then read by index.

Building examples (tokenising, packing, BERT pair sampling) happens once per fingerprint
of everything that determines them; training reads them back with `tfds` data sources
(random access, no TensorFlow), which Grain turns into step-indexed batches. TFDS writes
into an `incomplete.*` directory and renames it when done, so a dataset that exists is
whole.

A remote root (gs://) holds the same files. array_record reads and writes local files only,
so the dataset is written in a local folder and uploaded with TFDS's `dataset_info.json`
last (what marks it prepared), and every process reads it from a local copy kept under
`storage.cache_dir`, keyed by the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from lmscale import storage

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
# Written last by TFDS (and uploaded last to a remote root): its presence means complete.
DATASET_INFO = "lmscale_examples/1.0.0/dataset_info.json"


class LmscaleExamples(tfds.core.GeneratorBasedBuilder):
    """A dataset of fixed-shape numeric examples, one split per array dict."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []

    def __init__(self, *, splits: dict[str, Arrays], **kwargs):
        self._splits = splits
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        first = next(iter(self._splits.values()))
        features = {k: tfds.features.Tensor(shape=v.shape[1:], dtype=v.dtype)
                    for k, v in first.items()}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(arrays) for name, arrays in self._splits.items()}

    def _generate_examples(self, arrays: Arrays):
        for i in range(len(next(iter(arrays.values())))):
            yield i, {k: v[i] for k, v in arrays.items()}


def fingerprint(parts: dict) -> str:
    """A short stable hash of everything that determines the examples."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with storage.as_path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_dir(root: str, key: str) -> str:
    return storage.join(root, key)


def is_prepared(root: str, key: str) -> bool:
    return storage.isfile(storage.join(dataset_dir(root, key), DATASET_INFO))


def write_examples(root: str, key: str, splits: dict[str, Arrays], metadata: dict) -> None:
    """Write `splits` as an array_record TFDS dataset under root/key, plus `metadata.json`."""
    if storage.is_remote(root):
        staging = tempfile.mkdtemp(prefix="lmscale-prepare-")
        try:
            write_examples(staging, key, splits, metadata)
            storage.copy_tree(os.path.join(staging, key), dataset_dir(root, key),
                              last=(DATASET_INFO,))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    data_dir = dataset_dir(root, key)
    os.makedirs(data_dir, exist_ok=True)
    # Metadata first: the dataset counts as prepared only once TFDS has renamed its
    # finished directory into place, and then the metadata is already there.
    with open(os.path.join(data_dir, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(metadata, f)
    builder = LmscaleExamples(splits=splits, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False))
    log.info("wrote %s", {k: len(next(iter(v.values()))) for k, v in splits.items()})


def open_examples(root: str, key: str) -> tuple[dict, dict]:
    """({split: random-access source}, metadata) of a prepared dataset."""
    data_dir = dataset_dir(root, key)
    if storage.is_remote(root):
        local = storage.cache_dir("prepared", key)
        storage.mirror_to_local(data_dir, local)
        data_dir = local
    builder = tfds.builder_from_directory(os.path.join(data_dir, "lmscale_examples", "1.0.0"))
    sources = {split: builder.as_data_source(split=split) for split in builder.info.splits}
    with open(os.path.join(data_dir, "metadata.json"), encoding="utf-8") as f:
        return sources, json.load(f)


def prepare_once(root: str, key: str, build: Callable[[], tuple[dict[str, Arrays], dict]],
                 is_main: bool, barrier: Callable[[str], None]) -> tuple[dict, dict]:
    """Build and write the dataset on the main process if it is missing; everyone opens it."""
    if is_main and not is_prepared(root, key):
        splits, metadata = build()
        write_examples(root, key, splits, metadata)
    barrier(f"prepared-{key}")
    return open_examples(root, key)
