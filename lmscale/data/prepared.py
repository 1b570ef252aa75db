"""Examples written once as a TFDS dataset in array_record format, then read by index.

Building examples (tokenising, packing, BERT pair sampling) happens once per fingerprint
of everything that determines them; training reads them back with `tfds` data sources
(random access, no TensorFlow), which Grain turns into step-indexed batches.

The dataset is sharded like the corpus: each shard of the corpus writes its examples of
each split, in order, to its own array_record file (`write_examples_file`), whichever
process or Beam worker builds it, so no step gathers or sorts examples and no process
holds more than one shard. `finish_dataset` then names the files the TFDS way (a split's
shards in corpus order) and writes TFDS's metadata with `tfds.folder_dataset.write_metadata`:
a standard TFDS dataset, opened with `tfds.builder_from_directory`. Example i of a split
is the i-th example of the split's shard files taken in order; the loader shuffles.

A dataset that exists is whole: the shard files are written in an `incomplete-*` folder
(each file itself written beside its name and renamed), which is renamed into place only
when every shard has succeeded; a failed build removes it. `metadata.json`, written after
that rename, marks the dataset prepared.

A remote root (gs://) holds the same files. array_record reads and writes local files only,
so the dataset is written in a local folder and uploaded with `metadata.json` last, and
every process reads it from a local copy kept under `storage.cache_dir`, keyed by the
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow_datasets as tfds

from lmscale import storage

log = logging.getLogger(__name__)

Features = dict[str, tuple[tuple[int, ...], type]]  # name -> (shape of one example, dtype)
DATASET_NAME, VERSION = "lmscale_examples", "1.0.0"
VERSION_DIR = os.path.join(DATASET_NAME, VERSION)
DATASET_INFO = f"{DATASET_NAME}/{VERSION}/dataset_info.json"  # there once renamed into place
METADATA = "metadata.json"  # written last: its presence means complete


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
    folder = dataset_dir(root, key)
    return (storage.isfile(storage.join(folder, METADATA))
            and storage.isfile(storage.join(folder, DATASET_INFO)))


def feature_dict(features: Features) -> tfds.features.FeaturesDict:
    """TFDS features for `features`. Raw bytes rather than tf.Example int64/float lists:
    serializing an example is then a `tobytes` per array, not a Python list (which took
    most of the writing time), files are smaller (int32 stays 4 bytes) and reading is a
    `frombuffer`."""
    return tfds.features.FeaturesDict({
        name: tfds.features.Tensor(shape=shape, dtype=dtype,
                                   encoding=tfds.features.Encoding.BYTES)
        for name, (shape, dtype) in features.items()})


def new_incomplete_dir(data_dir: str) -> str:
    """A fresh local folder beside the dataset's final one, for its shard files;
    `finish_dataset` renames it into place. Folders left by a killed build are removed
    first (one process prepares a key at a time: process 0 of a run)."""
    parent = os.path.join(data_dir, DATASET_NAME)
    os.makedirs(parent, exist_ok=True)
    for stale in storage.glob(os.path.join(parent, f"{VERSION}.incomplete*")):
        shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(dir=parent, prefix=f"{VERSION}.incomplete-")


def shard_file(folder: str, split: str, shard_index: int) -> str:
    """Where a shard's examples of a split are written before `finish_dataset` names them."""
    return os.path.join(folder, f"{split}-{shard_index:06d}.array_record")


def write_examples_file(path: str, examples: Iterable[dict[str, np.ndarray]],
                        features: Features) -> tuple[int, int]:
    """Write examples, in order, as one array_record file (none when there are no
    examples); returns (examples, bytes). Written beside `path` and renamed, so a file
    that exists is whole, and a retried Beam bundle writes it again."""
    from array_record.python.array_record_module import ArrayRecordWriter
    from tensorflow_datasets.core.example_serializer import ExampleSerializer

    encoder = feature_dict(features)
    serializer = ExampleSerializer(encoder.get_serialized_info())
    staging = f"{path}.{os.getpid()}.incomplete"
    writer, count, size = None, 0, 0
    try:
        for example in examples:
            # What `FeaturesDict.serialize_example` does, but with protobuf's deterministic
            # map order: its default order varies between processes, and the files a Beam
            # worker writes are then byte-identical to the in-process path's.
            record = serializer.get_tf_example(encoder.encode_example(example)
                                               ).SerializeToString(deterministic=True)
            if writer is None:
                writer = ArrayRecordWriter(staging, "group_size:1")  # as TFDS writes them
            writer.write(record)
            count, size = count + 1, size + len(record)
        if writer is not None:
            writer.close()
            writer = None
            os.replace(staging, path)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(staging):
            os.remove(staging)
    return count, size


def finish_dataset(incomplete: str, features: Features,
                   shard_lengths: dict[str, list[tuple[int, int, int]]]) -> None:
    """Name the shard files TFDS's way, write TFDS's metadata (`dataset_info.json`,
    `features.json`), then rename the folder into place: from then on it is a TFDS
    dataset that `tfds.builder_from_directory` opens.

    `shard_lengths`: per split, (shard index, examples, bytes) in shard order; shards
    without examples have no file and are left out."""
    template = tfds.core.ShardedFileTemplate(
        data_dir=incomplete, dataset_name=DATASET_NAME, filetype_suffix="array_record",
        template=tfds.core.naming.DEFAULT_FILENAME_TEMPLATE)
    infos = []
    for split, shards in shard_lengths.items():
        written = [(index, count, size) for index, count, size in shards if count]
        split_template = template.replace(split=split)
        for number, (index, _, _) in enumerate(written):
            os.replace(shard_file(incomplete, split, index), split_template.sharded_filepath(
                shard_index=number, num_shards=len(written)))
        infos.append(tfds.core.SplitInfo(
            name=split, shard_lengths=[count for _, count, _ in written],
            num_bytes=sum(size for _, _, size in written), filename_template=split_template))
    tfds.folder_dataset.write_metadata(data_dir=incomplete, features=feature_dict(features),
                                       split_infos=infos, filename_template=template,
                                       check_data=False)
    os.replace(incomplete, os.path.join(os.path.dirname(incomplete), VERSION))


def _write_json_atomically(path: str, value: dict) -> None:
    staging = path + ".incomplete"
    with open(staging, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(staging, path)


def write_dataset(root: str, key: str, build: Callable[[str], dict]) -> dict:
    """`build(local_folder)` writes the TFDS dataset there and returns its metadata; the
    metadata is written last, then (for a remote root) everything is uploaded with it
    last, so a reader that finds `metadata.json` finds a complete dataset."""
    if storage.is_remote(root):
        staging = tempfile.mkdtemp(prefix="lmscale-prepare-")
        try:
            metadata = write_dataset(staging, key, build)
            storage.copy_tree(os.path.join(staging, key), dataset_dir(root, key),
                              last=(DATASET_INFO, METADATA))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return metadata
    data_dir = dataset_dir(root, key)
    os.makedirs(data_dir, exist_ok=True)
    metadata = build(data_dir)
    _write_json_atomically(os.path.join(data_dir, METADATA), metadata)
    return metadata


def open_examples(root: str, key: str) -> tuple[dict, dict]:
    """({split: random-access source}, metadata) of a prepared dataset."""
    data_dir = dataset_dir(root, key)
    if storage.is_remote(root):
        local = storage.cache_dir("prepared", key)
        storage.mirror_to_local(data_dir, local)
        data_dir = local
    builder = tfds.builder_from_directory(os.path.join(data_dir, VERSION_DIR))
    sources = {split: builder.as_data_source(split=split) for split in builder.info.splits}
    with open(os.path.join(data_dir, METADATA), encoding="utf-8") as f:
        return sources, json.load(f)


def prepare_once(root: str, key: str, build: Callable[[str], dict], is_main: bool,
                 barrier: Callable[[str], None]) -> tuple[dict, dict]:
    """Build and write the dataset on the main process if it is missing; everyone opens it."""
    if is_main and not is_prepared(root, key):
        write_dataset(root, key, build)
    barrier(f"prepared-{key}")
    return open_examples(root, key)
