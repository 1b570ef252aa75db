"""Corpus preparation on Apache Beam: the per-shard example function, run by Beam workers.

`lmscale data prepare --runner beam --workers N` (config: `data.prepare_runner="beam"`,
`data.prepare_workers`, `data.beam_options`) writes the same dataset as the default
in-process path, file for file: both call `shard_examples.prepare_shard` on the same
shards, each writing its own array_record files into the dataset's `incomplete-*` folder,
which is renamed into place only after the pipeline has succeeded.

Locally the pipeline runs on Beam's FnApiRunner with `--direct_running_mode=multi_processing
--direct_num_workers=N`: N worker processes, each taking whole shards (a worker costs
~250 MB and a few seconds to start, so the in-process path is the better choice for a
corpus of a few MB). Beam 2.77's plain "DirectRunner" would first try its Prism runner,
which downloads a binary; lmscale asks for FnApiRunner itself, so this works offline.

At scale the same pipeline runs on any Beam runner, named with its options in
`data.beam_options` / `--beam-options`, for example

    --beam-options="--runner=DataflowRunner --project=P --region=R
                    --temp_location=gs://B/tmp --setup_file=./setup.py"
    --beam-options="--runner=FlinkRunner --flink_master=HOST:8081 --environment_type=LOOPBACK"
    --beam-options="--runner=SparkRunner --spark_master_url=spark://HOST:7077"

and `lmscale data prepare ... --dry-run` checks those options (unknown flags, and what
Beam's own validator requires, e.g. Dataflow's project and temp_location) and prints the
shard plan without running anything. Workers need lmscale installed (`--setup_file`, or a
container image with `--sdk_container_image`).

One limit to know before going remote: array_record writes local files only
(google/array_record#120; TFDS's Beam writer fails on gs:// paths on Dataflow,
tensorflow/datasets#10981), and the per-shard stats files are written the same way, so the
prepared folder (`data.prepared_dir`) must be a path that the launching process and every
worker share: a local disk for FnApiRunner, an NFS / Filestore / GCS FUSE mount on a
Flink or Spark cluster. A gs:// `data.prepared_dir` is staged on the launching machine and
uploaded, which only a local runner can write to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from lmscale.data.corpus import Shard
from lmscale.data.shard_examples import ExampleSpec, prepare_shard
from lmscale.errors import ConfigError

# Runners that execute on this machine; any other is a remote service or cluster.
_LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner", "BundleBasedDirectRunner")


@dataclass(frozen=True)
class BeamSettings:
    workers: int = 0  # local worker processes; 0 = one per core
    options: tuple[str, ...] = ()  # Beam pipeline flags, e.g. ("--runner=FlinkRunner", ...)

    @property
    def num_workers(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)


def _options(flags: Sequence[str]):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(list(flags))


def runner_name(settings: BeamSettings) -> str | None:
    """The runner `settings.options` names (None: the local FnApiRunner)."""
    from apache_beam.options.pipeline_options import StandardOptions

    return _options(settings.options).view_as(StandardOptions).runner


def is_local(settings: BeamSettings) -> bool:
    return runner_name(settings) in _LOCAL_RUNNERS


def pipeline_options(settings: BeamSettings):
    """The `PipelineOptions`: the configured flags, plus multi-processing with
    `num_workers` workers when the runner is local."""
    flags = list(settings.options)
    if is_local(settings):
        flags += ["--direct_running_mode=multi_processing",
                  f"--direct_num_workers={settings.num_workers}"]
    return _options(flags)


def run_pipeline(settings: BeamSettings, spec: ExampleSpec, shards: Sequence[Shard],
                 out_dir: str, stats_dir: str) -> None:
    """Prepare every shard on Beam: `Create(shards) | Reshuffle | Map(prepare_shard)`.
    Each element is a whole shard, so Beam moves only shard descriptions and small stats
    between processes; the Reshuffle spreads the shards over the workers (without it Beam
    fuses Create and Map into one bundle, run by one worker)."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    runner = FnApiRunner() if is_local(settings) else None
    with beam.Pipeline(runner=runner, options=pipeline_options(settings)) as pipeline:
        _ = (pipeline
             | "Shards" >> beam.Create(list(shards))
             | "Spread" >> beam.Reshuffle()
             | "Prepare" >> beam.Map(_prepare, spec, out_dir, stats_dir))


def _prepare(shard: Shard, spec: ExampleSpec, out_dir: str, stats_dir: str) -> int:
    prepare_shard(spec, shard, out_dir, stats_dir)
    return shard.index


def check_settings(settings: BeamSettings, prepared_dir: str) -> list[str]:
    """What a dry run says about the runner: lines to print. Raises ConfigError on flags
    Beam does not know or options its validator rejects."""
    options = pipeline_options(settings)
    known = set(options.get_all_options(retain_unknown_options=False))
    given = set(options.get_all_options(retain_unknown_options=True))
    if given - known:
        raise ConfigError(f"unknown Beam pipeline option(s) {sorted(given - known)} in "
                          f"data.beam_options {list(settings.options)}")
    name = runner_name(settings)
    if is_local(settings):
        return [f"runner: FnApiRunner, multi_processing with {settings.num_workers} worker "
                "process(es)"]
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner

    try:
        runner = create_runner(name)
    except (ValueError, ImportError) as err:
        raise ConfigError(f"Beam cannot create runner {name!r}: {err}") from err
    # Beam's own dry-run flag: validate without contacting the cloud (bucket checks).
    checked = _options([*settings.options, "--dry_run=True"])
    validator = PipelineOptionsValidator(checked, runner)
    if validator.is_service_runner():
        # Without a valid temp_location Beam goes looking for a default bucket over the
        # network; a dry run says what is missing instead.
        from apache_beam.options.pipeline_options import GoogleCloudOptions

        errors = validator.validate_gcs_path(checked.view_as(GoogleCloudOptions),
                                             "temp_location")
        if errors:
            raise ConfigError(f"Beam options for {name}: {errors[0]} (e.g. "
                              "--temp_location=gs://BUCKET/tmp)")
    errors = validator.validate()
    if errors:
        raise ConfigError(f"Beam options for {name}: " + "; ".join(errors))
    return [f"runner: {name} (options validated by Beam)",
            f"note: {name}'s workers write array_record files under data.prepared_dir "
            f"({prepared_dir!r}), which must be a path they and this process share: "
            "array_record cannot write gs:// (see lmscale/data/beam_prepare.py)"]
