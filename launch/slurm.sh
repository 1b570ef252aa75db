#!/usr/bin/env bash
# Submits launch/slurm.sbatch with the common options as flags.
#
#   launch/slurm.sh [--dry-run] [--nodes N] [--gpus-per-node G] [--partition P]
#                   [--account A] [--time T] -- PRETRAIN_ARGS...
#   e.g. launch/slurm.sh --nodes 4 -- --config configs/gpt2_medium.py --workdir runs/gpt2-medium
#
# --dry-run prints the sbatch line and the srun line the job would run, and submits nothing.
set -euo pipefail

opts=()
dry_run=0
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --nodes | --gpus-per-node | --partition | --account | --time) opts+=("$1=$2"); shift ;;
    --) shift; break ;;
    *) echo "slurm.sh: unknown option $1 (pretrain arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
(($#)) || { echo "slurm.sh: give the pretrain arguments after --" >&2; exit 2; }

script="$(dirname "${BASH_SOURCE[0]}")/slurm.sbatch"
cmd=(sbatch "${opts[@]}" "$script" "$@")
if ((dry_run)); then
  printf '+'; printf ' %q' "${cmd[@]}"; echo
  bash "$script" --dry-run "$@"
else
  "${cmd[@]}"
fi
