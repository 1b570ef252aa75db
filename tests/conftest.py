"""Test session setup: 8 fake CPU devices (so meshes, sharding and multi-device paths are
exercised on any machine), and fixtures shared across test folders."""

import logging
import os
import socket
import subprocess
import sys
import time
import uuid

# Before JAX initialises its backends: tests run on the CPU with 8 fake devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()

import pytest  # noqa: E402

# <repo>/../shared/data, read in place; tests that need it skip when it is missing.
SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "../../shared/data"))

TINY_WORDS = """the a of in is was and to what who when where which how many year city river
paris france london england capital largest bridge built 1850 1900 seine thames flows
through good bad great awful movie film fun boring loved hated plot acting , . ? !""".split()


def write_tiny_hf_bert(out_dir: str, seed: int = 0, vocab_extra: int = 0) -> str:
    """A randomly initialised 2-layer BERT in Hugging Face layout, with a small vocab.txt."""
    import jax
    import jax.numpy as jnp
    import flax.linen as nn

    from lmscale.convert.hf_bert import write_hf_checkpoint
    from lmscale.models import BertModel, ModelConfig

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    vocab += [f"extra{i}" for i in range(vocab_extra)]
    cfg = ModelConfig(family="bert", vocab_size=len(vocab) - vocab_extra, max_len=128,
                      d_model=32, num_layers=2, num_heads=2, d_ff=64, layer_norm_eps=1e-12)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = nn.unbox(BertModel(cfg).init(jax.random.key(seed), ids, ids, ids))
    write_hf_checkpoint(out_dir, cfg, {"params": {"bert": jax.device_get(params["params"])}})
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    return out_dir


@pytest.fixture(scope="session")
def tiny_hf_bert(tmp_path_factory) -> str:
    return write_tiny_hf_bert(str(tmp_path_factory.mktemp("tiny_hf_bert")))


@pytest.fixture(scope="session")
def shared_data() -> str:
    """`<repo>/../shared/data`, or a skip when this checkout has none beside it."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def docstring_corpus(tmp_path_factory) -> str:
    """Real prose (120 standard-library modules' docstrings), small enough for quick runs."""
    from lmscale.data.corpus import stdlib_docstrings

    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(stdlib_docstrings()[:120]), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def docstring_tokenizer(docstring_corpus, tmp_path_factory) -> str:
    """A 512-piece SentencePiece model of `docstring_corpus`, for runs that share one."""
    from lmscale.data.tokenizer import TokenizerTrainSpec, train_sentencepiece

    prefix = tmp_path_factory.mktemp("tokenizer") / "spm"
    return train_sentencepiece(TokenizerTrainSpec(inputs=(docstring_corpus,), vocab_size=512),
                               str(prefix))


# --- A real GCS JSON-API server on 127.0.0.1 for the gs:// run-directory tests -------------
# The `gcp-storage-emulator` package, run by tests/storage/gcs_server.py with the generation
# headers real GCS sends. Every client finds it through STORAGE_EMULATOR_HOST alone:
# google-cloud-storage and gcsfs read it, and `lmscale.storage` derives tensorstore's
# TENSORSTORE_GCS_HTTP_URL from it. (Kept here, not in a tests/storage/conftest.py: tests
# import helpers `from conftest`, and a second conftest module would shadow this one.)

GCS_BUCKET = "lmscale-test"


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
        [sys.executable, os.path.join(os.path.dirname(__file__), "storage", "gcs_server.py"),
         "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
         "--default-bucket", GCS_BUCKET],
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
    return f"gs://{GCS_BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def run_env(gcs_emulator) -> dict:
    """The environment of a run in a subprocess: STORAGE_EMULATOR_HOST alone points it at
    the emulator (what a user sets); one CPU device keeps it light."""
    return {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "TENSORSTORE_GCS_HTTP_URL")} | {"PYTHONUNBUFFERED": "1"}


# --- Shared by the SIGTERM / resume tests (tests/train/test_resume.py and its variants) ---

def tiny_run_args(steps: int, checkpoint_every: int) -> list[str]:
    """Config overrides of a tiny, quick pretraining run with dropout on (its randomness
    must resume too), logging every step."""
    return ["--config.model.vocab_size=512", "--config.model.d_model=64",
            "--config.model.num_heads=2", "--config.model.d_ff=256",
            "--config.model.max_len=64", "--config.data.seq_len=64",
            "--config.model.dropout=0.1", "--config.train.batch_size=16",
            f"--config.train.steps={steps}", "--config.train.log_every=1",
            "--config.train.eval_every=0", f"--config.train.checkpoint_every={checkpoint_every}",
            "--config.train.samples=0", "--config.train.peak_flops=1e11",
            "--config.optimizer.warmup_steps=5"]


def logged_losses(workdir) -> dict[int, float]:
    import json

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def one_device_env() -> dict:
    """A subprocess's environment: one CPU device per process keeps it light."""
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PYTHONUNBUFFERED": "1"}


def stop_with_sigterm(command: list[str], workdir, after_lines: int = 3) -> str:
    """Run `command`, send SIGTERM once its metrics.jsonl has `after_lines` lines, and
    return its output once it has exited 0."""
    import signal

    proc = subprocess.Popen(command, env=one_device_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= after_lines:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    return output
