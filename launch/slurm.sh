#!/usr/bin/env bash
# Submits launch/slurm.sbatch with the common options as flags.
#
#   launch/slurm.sh [--dry-run] [--max-resubmits N] [--nodes N] [--gpus-per-node G]
#                   [--partition P] [--account A] [--time T] -- PRETRAIN_ARGS...
#   e.g. launch/slurm.sh --nodes 4 --max-resubmits 5 -- \
#          --config configs/gpt2_medium.py --workdir /shared/runs/gpt2-medium
#
# --max-resubmits N (default 0): when the run stops before it is done (its time limit, a
# SIGTERM), the job requeues itself, up to N restarts in all, and resumes from the latest
# checkpoint; slurm.sbatch says how. --dry-run prints the sbatch line and the lines the job
# would run, and submits nothing.
set -euo pipefail

opts=()
max_resubmits=0
dry_run=0
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --max-resubmits) max_resubmits=$2; shift ;;
    --nodes | --gpus-per-node | --partition | --account | --time) opts+=("$1=$2"); shift ;;
    --) shift; break ;;
    *) echo "slurm.sh: unknown option $1 (pretrain arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
(($#)) || { echo "slurm.sh: give the pretrain arguments after --" >&2; exit 2; }
[[ $max_resubmits =~ ^(0|[1-9][0-9]*)$ ]] || {
  echo "slurm.sh: --max-resubmits takes a count (0, 1, 2, ...), not '$max_resubmits'" >&2; exit 2; }
# The job script's own options; none without resubmits, so that sbatch line stays as before.
job_args=()
if ((max_resubmits)); then job_args=(--max-resubmits "$max_resubmits"); fi

script="$(dirname "${BASH_SOURCE[0]}")/slurm.sbatch"
cmd=(sbatch "${opts[@]}" "$script" "${job_args[@]}" "$@")
if ((dry_run)); then
  printf '+'; printf ' %q' "${cmd[@]}"; echo
  bash "$script" --dry-run "${job_args[@]}" "$@"
else
  "${cmd[@]}"
fi
