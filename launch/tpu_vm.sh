#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM slice: request a spot slice through a queued resource, wait for
# it, install this checkout on every worker, run `lmscale pretrain` on all workers at once
# (JAX detects the slice itself, so no coordinator flags), stream the output, and delete the
# slice when done, failed or interrupted.
#
#   launch/tpu_vm.sh [--dry-run] [--name N] [--accelerator-type T] [--runtime-version V]
#                    [--zone Z] [--project P] [--setup CMD] -- PRETRAIN_ARGS...
#   e.g. launch/tpu_vm.sh --accelerator-type v4-32 -- \
#          --config configs/gpt2_small.py --workdir /mnt/runs/gpt2-small
#
# Flags default to TPU_NAME, TPU_ACCELERATOR, TPU_RUNTIME, TPU_ZONE, TPU_PROJECT (an empty
# project means gcloud's configured one). Installation: a wheel built from this checkout and
# configs/ are copied with `tpu-vm scp` to every worker, so uncommitted work runs too and the
# slice needs no access to the repository. --setup runs a command on every worker before
# training, e.g. mounting a bucket: the workdir must be shared by all workers and outlive the
# slice, because re-running this script resumes from the latest checkpoint there.
# --dry-run prints every command instead of running it.
set -euo pipefail

name=${TPU_NAME:-lmscale-${USER:-user}}
accelerator=${TPU_ACCELERATOR:-v4-32}
runtime=${TPU_RUNTIME:-tpu-ubuntu2204-base}
zone=${TPU_ZONE:-us-central2-b}
project=${TPU_PROJECT:-}
setup=""
dry_run=0
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --name) name=$2; shift ;;
    --accelerator-type) accelerator=$2; shift ;;
    --runtime-version) runtime=$2; shift ;;
    --zone) zone=$2; shift ;;
    --project) project=$2; shift ;;
    --setup) setup=$2; shift ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option $1 (pretrain arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
(($#)) || { echo "tpu_vm.sh: give the pretrain arguments after --" >&2; exit 2; }

# Prints a command, quoting only the words that need it, so dry-run output reads as shell.
show() {
  local out=() word
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=@%+,~-]+$ ]]; then out+=("$word")
    else out+=("'${word//\'/\'\\\'\'}'"); fi
  done
  echo "+ ${out[*]}"
}
run() { if ((dry_run)); then show "$@"; else "$@"; fi; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
where=(--zone="$zone")
[[ -n $project ]] && where+=(--project="$project")
tpu=(gcloud compute tpus tpu-vm)
qr=(gcloud compute tpus queued-resources)
dist=$(mktemp -d)

cleanup() {
  trap - EXIT INT TERM
  rm -rf "$dist"
  echo "deleting $name" >&2
  run "${qr[@]}" delete "$name" "${where[@]}" --force --quiet
}

run "${qr[@]}" create "$name" --node-id="$name" --accelerator-type="$accelerator" \
  --runtime-version="$runtime" --spot "${where[@]}"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Spot capacity may take hours; FAILED/SUSPENDED (preempted before we started) are final.
if ((dry_run)); then
  show "${qr[@]}" describe "$name" "${where[@]}" --format='value(state.state)'
else
  while state=$("${qr[@]}" describe "$name" "${where[@]}" --format='value(state.state)'); do
    case $state in
      ACTIVE) break ;;
      FAILED | SUSPENDING | SUSPENDED) echo "queued resource $name is $state" >&2; exit 1 ;;
    esac
    echo "$(date +%T) $name: $state" >&2
    sleep 30
  done
fi

run python -m pip wheel --no-deps --quiet --wheel-dir "$dist" "$repo"
if ((dry_run)); then wheel="$dist/lmscale-VERSION.whl"; else wheel=$(echo "$dist"/lmscale-*.whl); fi
run "${tpu[@]}" scp --recurse "$wheel" "$repo/configs" "$name": --worker=all "${where[@]}"
run "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" \
  --command="python3 -m pip install --quiet --upgrade 'jax[tpu]' ~/$(basename "$wheel")"
[[ -n $setup ]] && run "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" --command="$setup"

# Remote shell words: quoted here, unquoted by the workers' shell. pip --user puts the
# console script in ~/.local/bin, which a non-login ssh shell does not have on PATH.
printf -v args ' %q' "$@"
run "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" \
  --command="cd ~ && PATH=\$HOME/.local/bin:\$PATH lmscale pretrain$args"
