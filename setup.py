"""lmscale: pretrain, fine-tune and evaluate BERT and GPT-2 models with JAX/Flax."""

from setuptools import find_packages, setup

# Versions tested together on CPU (see ../shared/DESIGN.md, "Verified facts").
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "array-record==0.8.6",
    "tensorflow-datasets==4.9.10",
    "importlib-resources==7.1.0",  # tfds needs it for builders defined outside its package
    "sentencepiece==0.2.3",
    # apache-beam 2.77 needs protobuf < 7 and proto-plus / googleapis-common-protos need
    # >= 6.33.5. sentencepiece 0.2.3's own sentencepiece_model_pb2 refuses protobuf 6 (its
    # gencode is 7.36.1), so lmscale/convert/spm_to_hf.py loads the model proto from that
    # module's serialized descriptor in a private pool instead of importing it.
    "protobuf==6.33.6",
    # Corpus preparation at scale (lmscale/data/beam_prepare.py): DirectRunner here,
    # Dataflow / Flink / Spark with their runner options.
    "apache-beam==2.77.0",
    "ml-collections==1.1.0",
    "numpy==2.4.6",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "tensorboardX==2.6.5",
    "scipy==1.17.1",
    # Run directories anywhere (lmscale/storage.py): etils epath reaches gs:// through
    # gcsfs (Orbax's arrays go through tensorstore).
    "etils[epath]==1.15.0",
    "gcsfs==2026.10.1",
]

LIBTPU = "libtpu==0.0.42.1"

setup(
    name="lmscale",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["lmscale", "lmscale.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # libtpu gives `lmscale plan` real TPU topologies to compile for (no TPU needed);
        # 0.0.42.* is what jax[tpu] 0.10.2 pins.
        "tpu": [LIBTPU],
        # gcp-storage-emulator: a local GCS server for the gs:// run-directory tests.
        "test": ["pytest==9.0.3", "ruff==0.17.6", "gcp-storage-emulator==2026.7.19", LIBTPU],
        # The Hugging Face PyTorch peer of benchmarks/cpu_side_by_side.py and the accelerator
        # suite ("torch==2.13.0" is the CPU wheel here). The Flax peer needs transformers
        # 4.57.6, which refuses tokenizers 0.23.3, so it gets its own environment
        # (benchmarks/peers/requirements-flax.txt).
        "peers": ["torch==2.13.0", "transformers==5.24.0"],
    },
    entry_points={"console_scripts": ["lmscale=lmscale.cli:entry_point"]},
)
