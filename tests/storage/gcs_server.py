"""Runs the `gcp-storage-emulator` GCS server with one gap closed: on a media download,
real GCS sends the object's generation in `x-goog-generation` (and
`x-goog-metageneration`) headers, which tensorstore's gcs driver (Orbax's array storage)
reads to version what it read; the emulator leaves them out, and tensorstore then fails
with "Malformed StorageGeneration" when it re-reads an OCDBT manifest.

    python tests/storage/gcs_server.py start --host 127.0.0.1 --port P --in-memory ...
"""

import sys

from gcp_storage_emulator import __main__ as emulator
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download_with_generation(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # noqa: BLE001 - not found: the original handler answered already
        return
    response["x-goog-generation"] = obj["generation"]
    response["x-goog-metageneration"] = obj["metageneration"]


# Before the server module builds its routing table from these functions.
objects.download = download_with_generation

if __name__ == "__main__":
    emulator.main(sys.argv[1:])
