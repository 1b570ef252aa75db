"""A real GCS JSON-API server on 127.0.0.1 (the `gcp-storage-emulator` package, run by
gcs_server.py with the generation headers real GCS sends), for the tests of gs:// run
directories. Every client finds it through STORAGE_EMULATOR_HOST alone:
google-cloud-storage and gcsfs read it, and `lmscale.storage` derives tensorstore's
TENSORSTORE_GCS_HTTP_URL from it."""

import logging
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

BUCKET = "lmscale-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """The emulator's address (http://127.0.0.1:PORT), serving bucket `lmscale-test`; also
    set as STORAGE_EMULATOR_HOST (and tensorstore's variable) for this process and every
    subprocess the tests start."""
    pytest.importorskip("gcp_storage_emulator", reason="pip install -e '.[test]' installs "
                        "gcp-storage-emulator, the local GCS server these tests need")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "gcs_server.py"), "start",
         "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--default-bucket", BUCKET],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the GCS emulator did not start")
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL")}
    # This process imported lmscale.storage already, so set tensorstore's variable here too;
    # subprocesses get STORAGE_EMULATOR_HOST alone and must derive it themselves.
    os.environ["STORAGE_EMULATOR_HOST"] = host
    os.environ["TENSORSTORE_GCS_HTTP_URL"] = host
    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # as lmscale.storage does then
    yield host
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def gcs_dir(gcs_emulator) -> str:
    """A fresh gs:// folder for one test."""
    return f"gs://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def run_env(gcs_emulator) -> dict:
    """The environment of a run in a subprocess: STORAGE_EMULATOR_HOST alone points it at
    the emulator (what a user sets); one CPU device keeps it light."""
    return {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "TENSORSTORE_GCS_HTTP_URL")} | {"PYTHONUNBUFFERED": "1"}
