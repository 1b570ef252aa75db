"""Test session setup: 8 fake CPU devices (so meshes, sharding and multi-device paths are
exercised on any machine), and fixtures shared across test folders."""

import os

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
