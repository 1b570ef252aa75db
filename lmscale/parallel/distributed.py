"""Multi-host start-up: one process per host, joined by `jax.distributed.initialize`.

Explicit settings (coordinator address, process count and id) win; otherwise JAX's own
cluster detection is used where a cluster is evident (Cloud TPU VM slices, SLURM jobs of
several tasks), and a lone process stays single-process. Must run before JAX touches a
device.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def _cluster_detected() -> bool:
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm_tasks > 1 or "," in tpu_hosts


def initialize_distributed(cfg) -> None:
    """`cfg` has coordinator_address ("" = auto), num_processes and process_id."""
    if jax.distributed.is_initialized():
        return
    if cfg.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=cfg.coordinator_address,
            num_processes=cfg.num_processes or None,
            process_id=None if cfg.process_id < 0 else cfg.process_id)
    elif _cluster_detected():
        jax.distributed.initialize()
    else:
        return
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
