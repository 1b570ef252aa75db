"""The pretraining config every recipe in configs/ starts from; it also defines which
keys exist (a key not here is a typo)."""

from __future__ import annotations

import ml_collections

from lmscale.models.config import preset


def pretrain_config(model_preset: str, **model_overrides) -> ml_collections.ConfigDict:
    model = preset(model_preset, **model_overrides)
    gpt = model["family"] == "gpt"
    c = ml_collections.ConfigDict()
    c.name = ""
    c.model = ml_collections.ConfigDict(model)

    c.data = ml_collections.ConfigDict()
    # Text files / globs (local or gs://), tfds:NAME[:SPLIT[:FEATURE]], builtin corpora.
    # SOURCE@WEIGHT on every entry makes a weighted mixture: each source is prepared on
    # its own and every batch holds its share (lmscale/data/mixture.py).
    c.data.sources = ["builtin:stdlib-docstrings"]
    c.data.document_split = "auto"  # auto | file | blank_line (see lmscale/data/corpus.py)
    c.data.tfds_data_dir = ""
    c.data.prepared_dir = ""  # where examples are written once; "" = <workdir>/data
    c.data.tokenizer = ""  # a SentencePiece .model; "" trains one on the training split
    c.data.tokenizer_model_type = "unigram"
    # Lines of the training split a tokenizer is trained on: a seeded uniform sample, read
    # from shards in a seeded order (SentencePiece's input_sentence_size; memory is this
    # sample, not the corpus). See sample_training_lines in lmscale/data/pretrain.py.
    c.data.tokenizer_sample_sentences = 1_000_000
    c.data.seq_len = 128
    c.data.eval_fraction = 0.05
    c.data.seed = 0
    # Preparation at scale (lmscale/data/corpus.py, shard_examples.py, beam_prepare.py).
    # Sources are cut into shards of about this many MB of text (consecutive files of a
    # pattern; record ranges of a tfds split); GPT packing and BERT pairing stay within a
    # shard, as BERT's create_pretraining_data ran per input file.
    c.data.shard_mb = 16.0
    # A source file or tfds record range that is truncated inside a UTF-8 sequence, not
    # UTF-8, or empty stops preparation (naming it) unless this is True: then it is
    # skipped, logged and listed in the prepared data's metadata.json.
    c.data.skip_bad_shards = False
    # Who builds the examples: "in_process" (shard after shard) or "beam" (Apache Beam;
    # the same examples). `lmscale data prepare --runner/--workers/--beam-options`.
    c.data.prepare_runner = "in_process"
    c.data.prepare_workers = 0  # local Beam worker processes; 0 = one per core
    c.data.beam_options = []  # Beam pipeline flags, e.g. ["--runner=FlinkRunner", ...]
    # BERT create_pretraining_data options (BERT section A.2 / the original script).
    c.data.short_seq_prob = 0.1
    c.data.masked_lm_prob = 0.15
    c.data.max_predictions_per_seq = 20
    c.data.dupe_factor = 1
    c.data.whole_word_mask = False
    # Sequence-length phases, as (fraction of steps, seq_len, max_predictions_per_seq):
    # BERT trains 90% of steps at 128 and the rest at 512. Empty = data.seq_len throughout.
    c.data.phases = []

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 32
    c.train.grad_accum_steps = 1
    c.train.seed = 0
    c.train.log_every = 10
    c.train.eval_every = 100
    c.train.eval_batches = 8
    c.train.samples = 3  # generated samples (GPT) or fill-mask lines (BERT) at the end
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    c.train.keep_every = 0  # also keep every K-th step's checkpoint (0 = none)
    c.train.peak_flops = 0.0  # per device; 0 = the chip table's, else measured here
    _add_performance_tools(c.train)

    c.optimizer = ml_collections.ConfigDict()
    if gpt:  # GPT-2 / nanoGPT recipe: AdamW, warmup, cosine to 10%.
        c.optimizer.learning_rate = 6e-4
        c.optimizer.warmup_steps = 2000
        c.optimizer.schedule = "cosine"
        c.optimizer.final_lr_fraction = 0.1
        c.optimizer.b2 = 0.95
        c.optimizer.weight_decay = 0.1
    else:  # BERT section A.2: lr 1e-4, betas (0.9, 0.999), decay 0.01, 10k warmup, linear.
        c.optimizer.learning_rate = 1e-4
        c.optimizer.warmup_steps = 10000
        c.optimizer.schedule = "linear"
        c.optimizer.final_lr_fraction = 0.0
        c.optimizer.b2 = 0.999
        c.optimizer.weight_decay = 0.01
    c.optimizer.b1 = 0.9
    c.optimizer.eps = 1e-8 if gpt else 1e-6
    c.optimizer.clip_norm = 1.0

    _add_parallel_sections(c)
    return c


def gpt2_paper_recipe(model_preset: str) -> ml_collections.ConfigDict:
    """GPT-2 at the paper's context 1,024 and batch 512 sequences (in 8 micro-batches), with
    nanoGPT's recipe for its reproduction (AdamW, 2,000 warmup steps, cosine to 10% over
    600k steps, no dropout), bf16 compute and FSDP over every device."""
    # Dropout 0, as nanoGPT's GPT-2 reproduction pretrains (GPT-2 itself used 0.1): attention
    # then runs through fused kernels, and libtpu 0.0.42 overflows its stack compiling the
    # explicit attention-dropout path under remat at GPT-2 XL's shapes (docs/plan.md).
    c = pretrain_config(model_preset, compute_dtype="bfloat16", remat_policy="dots_no_batch",
                        dropout=0.0)
    # OpenWebText is not in the TFDS catalog; C4 is the nearest web corpus there.
    c.data.sources = ["tfds:c4/en:train"]
    # A GPT-2 BPE directory (vocab.json + merges.txt) keeps GPT-2's 50,257-token vocabulary.
    c.data.tokenizer = ""
    c.data.seq_len = 1024
    c.train.steps = 600_000
    c.train.batch_size = 512
    # 8 micro-batches of 64 sequences: the whole batch at once needs ~50 GiB per v5e device
    # at 16 devices (`lmscale plan`); this fits GPT-2 small on a v5e-16 and XL on a v5p-64.
    c.train.grad_accum_steps = 8
    # model.loss_chunk stays 0 (whole logits): chunking the loss saves GPT-2 XL 1.09 of
    # 10.07 GiB per v5e-32 device here, where the step fits anyway, and `lmscale plan`
    # estimates a slower step (recomputed logits; docs/plan/gpt2_xl_chunked_ce.txt). It is
    # the lever for fewer micro-batches or longer rows: --config.model.loss_chunk=256.
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.mesh.data = 1
    c.mesh.fsdp = -1
    return c


def bert_paper_recipe(model_preset: str) -> ml_collections.ConfigDict:
    """BERT pretraining as in the BERT paper, section A.2: batch 256 sequences, 1M steps,
    90% of them at length 128 and the rest at 512; Adam lr 1e-4 with 10k warmup and linear
    decay, weight decay 0.01, dropout 0.1; bf16 compute and FSDP over every device."""
    c = pretrain_config(model_preset, compute_dtype="bfloat16", remat_policy="dots_no_batch")
    # BooksCorpus is not in the TFDS catalog; add it as local files if you have it.
    c.data.sources = ["tfds:wikipedia/20230601.en:train"]
    c.data.dupe_factor = 10
    c.data.phases = [(0.9, 128, 20), (1.0, 512, 80)]
    c.train.steps = 1_000_000
    c.train.batch_size = 256
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 10_000
    c.mesh.data = 1
    c.mesh.fsdp = -1
    return c


def _add_parallel_sections(c: ml_collections.ConfigDict) -> None:
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # "" = auto-detect (TPU VM, SLURM) or 1 process
    c.distributed.num_processes = 0
    c.distributed.process_id = -1


def finetune_config(model_preset: str = "bert-base",
                    **model_overrides) -> ml_collections.ConfigDict:
    """Sections every fine-tuning recipe shares; a task adds its own `task` section.

    `model` gives the architecture when starting from scratch; when `init.checkpoint` is
    set, the shape comes from the checkpoint and only dtype/remat/dropout fields apply.
    """
    c = ml_collections.ConfigDict()
    c.name = ""
    c.model = ml_collections.ConfigDict(preset(model_preset, **model_overrides))
    c.init = ml_collections.ConfigDict()
    c.init.checkpoint = ""  # lmscale export, lmscale pretrain run, or converted HF directory
    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000  # optimiser steps; tasks may derive it from epochs
    c.train.epochs = 2.0
    c.train.batch_size = 32
    c.train.grad_accum_steps = 1
    c.train.seed = 0
    c.train.log_every = 10
    c.train.eval_every = 0
    c.train.eval_batches = 8
    c.train.checkpoint_every = 0
    c.train.keep_checkpoints = 1
    c.train.keep_every = 0
    c.train.peak_flops = 0.0
    _add_performance_tools(c.train)
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 5e-5
    c.optimizer.warmup_steps = 0  # tasks set 10% of steps (BERT fine-tuning recipe)
    c.optimizer.schedule = "linear"
    c.optimizer.final_lr_fraction = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-6
    c.optimizer.weight_decay = 0.01
    c.optimizer.clip_norm = 1.0
    _add_parallel_sections(c)
    return c


def _add_performance_tools(train: ml_collections.ConfigDict) -> None:
    # [first, last): trace those steps with jax.profiler into <workdir>/profile.
    train.profile_steps = []
    # JAX's persistent compilation cache ("" = off): reruns and resumes skip compiling.
    train.compilation_cache_dir = ""
    # Input: batches assembled ahead of the step on Grain threads, and Grain worker
    # processes for CPU-bound assembly (0 = threads only); see lmscale/data/loader.py.
    # Neither changes what a batch holds: batch s is a function of the seed and s.
    train.prefetch_batches = 2
    train.loader_workers = 0
