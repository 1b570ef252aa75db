#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM slice: request a spot slice through a queued resource, wait for
# it, install this checkout on every worker, run `lmscale pretrain` on all workers at once
# (JAX detects the slice itself, so no coordinator flags), stream the output, and delete the
# slice when done, failed or interrupted. With --max-restarts N, a preempted slice is
# deleted and queued again, up to N times, and the same command resumes the run.
#
#   launch/tpu_vm.sh [--dry-run] [--max-restarts N] [--name N] [--accelerator-type T]
#                    [--runtime-version V] [--zone Z] [--project P] [--setup CMD]
#                    [--wheel FILE] -- PRETRAIN_ARGS...
#   e.g. launch/tpu_vm.sh --accelerator-type v4-32 --max-restarts 5 -- \
#          --config configs/gpt2_small.py --workdir gs://BUCKET/runs/gpt2-small
#
# Flags default to TPU_NAME, TPU_ACCELERATOR, TPU_RUNTIME, TPU_ZONE, TPU_PROJECT (an empty
# project means gcloud's configured one) and TPU_MAX_RESTARTS (0). TPU_POLL_SECONDS (30) is
# the wait between two looks at the queued resource. Installation: a wheel built from this
# checkout (or --wheel FILE) and configs/ are copied with `tpu-vm scp` to every worker, so
# uncommitted work runs too and the slice needs no access to the repository. --setup runs a
# command on every worker before training. The workdir must outlive the slice and be shared
# by all workers (a gs:// URL, or storage --setup mounts), because every attempt resumes
# from the latest checkpoint there.
#
# Preemption, which uses up one restart: the queued resource is SUSPENDING, SUSPENDED or
# PREEMPTED while waiting for capacity, a worker command failed while the queued resource
# was gone or not ACTIVE, or the run itself reported `stopped: preempted` (it saved a
# checkpoint on SIGTERM). FAILED is not a preemption: the request itself was refused (quota,
# type, zone), and asking again the same way would not help. Neither is a command failing on
# an ACTIVE slice: that is the run's own error. docs/launch.md has the details.
# Exit status: 0 when the run reports `stopped: done`; 1 when something other than a
# preemption failed; 2 for bad usage; 3 when a preemption found no restarts left.
# --dry-run prints every command instead of running it.
set -euo pipefail

name=${TPU_NAME:-lmscale-${USER:-user}}
accelerator=${TPU_ACCELERATOR:-v4-32}
runtime=${TPU_RUNTIME:-tpu-ubuntu2204-base}
zone=${TPU_ZONE:-us-central2-b}
project=${TPU_PROJECT:-}
max_restarts=${TPU_MAX_RESTARTS:-0}
poll_seconds=${TPU_POLL_SECONDS:-30}
setup=""
wheel=""
dry_run=0
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --max-restarts) max_restarts=$2; shift ;;
    --name) name=$2; shift ;;
    --accelerator-type) accelerator=$2; shift ;;
    --runtime-version) runtime=$2; shift ;;
    --zone) zone=$2; shift ;;
    --project) project=$2; shift ;;
    --setup) setup=$2; shift ;;
    --wheel) wheel=$2; shift ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option $1 (pretrain arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
(($#)) || { echo "tpu_vm.sh: give the pretrain arguments after --" >&2; exit 2; }
[[ $max_restarts =~ ^(0|[1-9][0-9]*)$ ]] || {
  echo "tpu_vm.sh: --max-restarts takes a count (0, 1, 2, ...), not '$max_restarts'" >&2; exit 2; }

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
say() { echo "tpu_vm.sh: $*" >&2; }
fail() { local status=$1; shift; say "$*"; exit "$status"; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
where=(--zone="$zone")
[[ -n $project ]] && where+=(--project="$project")
tpu=(gcloud compute tpus tpu-vm)
qr=(gcloud compute tpus queued-resources)
scratch=$(mktemp -d)  # the wheel we build and each attempt's output
queued=0              # whether a queued resource of ours exists, so exit deletes it

# Remote shell words: quoted here, unquoted by the workers' shell. pip --user puts the
# console script in ~/.local/bin, which a non-login ssh shell does not have on PATH.
printf -v pretrain_args ' %q' "$@"
pretrain_command="cd ~ && PATH=\$HOME/.local/bin:\$PATH lmscale pretrain$pretrain_args"

delete_slice() {
  run "${qr[@]}" delete "$name" "${where[@]}" --force --quiet ||
    say "could not delete $name; check with: ${qr[*]} list ${where[*]}"
  queued=0
}

cleanup() {
  trap - EXIT INT TERM
  rm -rf "$scratch"
  if ((queued)); then echo "deleting $name" >&2; delete_slice; fi
}

# The queued resource's state, or GONE when it can't be described (deleted under us).
slice_state() {
  "${qr[@]}" describe "$name" "${where[@]}" --format='value(state.state)' || echo GONE
}

# Each step of an attempt below sets `reason` when it finds the slice preempted, and exits
# (through the EXIT trap, which deletes the slice) when something else failed.

# Waits for capacity (spot may take hours) until the queued resource is ACTIVE.
wait_until_active() {
  local state
  if ((dry_run)); then
    show "${qr[@]}" describe "$name" "${where[@]}" --format='value(state.state)'
    return
  fi
  while :; do
    state=$(slice_state)
    case $state in
      ACTIVE) return ;;
      SUSPENDING | SUSPENDED | PREEMPTED)
        reason="queued resource $name is $state before the run started"; return ;;
      FAILED | GONE)
        fail 1 "queued resource $name is $state while waiting for capacity" \
          "(details: ${qr[*]} describe $name ${where[*]})" ;;
    esac
    echo "$(date +%T) $name: $state" >&2
    sleep "$poll_seconds"
  done
}

# `what` failed with `status`: a preemption if the queued resource is no longer ACTIVE,
# otherwise a failure. ssh's own status 255 (the connection dropped) can come before the
# state changes, so that case looks again after a poll interval.
preempted_or_fail() {
  local status=$1 what=$2 state
  state=$(slice_state)
  if [[ $state == ACTIVE ]] && ((status == 255)); then
    sleep "$poll_seconds"
    state=$(slice_state)
  fi
  case $state in
    ACTIVE | FAILED)
      fail 1 "$what exited with status $status while queued resource $name is $state:" \
        "not a preemption, so no restart" ;;
  esac
  reason="$what exited with status $status and queued resource $name is $state"
}

# Runs `gcloud compute tpus tpu-vm ARGS...` for every worker, unless the attempt was
# already preempted.
on_workers() {
  local what=$1 status=0
  shift
  [[ -z $reason ]] || return 0
  run "${tpu[@]}" "$@" || status=$?
  if ((status != 0)); then preempted_or_fail "$status" "$what"; fi
}

build_wheel() {
  run python -m pip wheel --no-deps --quiet --wheel-dir "$scratch" "$repo"
  if ((dry_run)); then wheel="$scratch/lmscale-VERSION.whl"
  else wheel=$(echo "$scratch"/lmscale-*.whl); fi
}

install() {
  if [[ -z $wheel ]]; then build_wheel; fi
  on_workers "copying the wheel" scp --recurse "$wheel" "$repo/configs" "$name": --worker=all \
    "${where[@]}"
  on_workers "installing" ssh "$name" --worker=all "${where[@]}" \
    --command="python3 -m pip install --quiet --upgrade 'jax[tpu]' ~/$(basename "$wheel")"
  if [[ -n $setup ]]; then
    on_workers "--setup" ssh "$name" --worker=all "${where[@]}" --command="$setup"
  fi
}

# Runs `lmscale pretrain` on every worker and streams its output (stdout and stderr), kept
# in $scratch/attempt-N.log. The launcher knows only that stream, so its summary of an
# attempt quotes the run's own lines: `resuming from step N`, logged when it restores a
# checkpoint, and the final `run directory: DIR  (stopped: done|preempted, step N)`.
train() {
  local log=$scratch/attempt-$attempt.log status=0 resumed stopped="" step="" summary
  if ((dry_run)); then
    show "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" --command="$pretrain_command"
    return
  fi
  "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" --command="$pretrain_command" 2>&1 |
    tee "$log" || status=${PIPESTATUS[0]}
  resumed=$(sed -n 's/.*resuming from step \([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
  read -r stopped step < <(sed -n 's/.*(stopped: \([a-z]*\), step \([0-9][0-9]*\)).*/\1 \2/p' \
    "$log" | tail -n 1) || true
  summary="restored no checkpoint"
  if [[ -n $resumed ]]; then summary="resumed from step $resumed"; fi
  if [[ -n $stopped ]]; then summary+=", stopped: $stopped at step $step"
  else summary+=", reported no final step"; fi
  say "attempt $attempt $summary (exit status $status)"
  if [[ $stopped == "done" ]] && ((status == 0)); then return; fi
  if [[ $stopped == preempted ]]; then
    reason="the run saved and stopped at step $step (stopped: preempted)"
  elif ((status == 0)); then
    fail 1 "the training command exited 0 without a final '(stopped: ...)' line"
  else
    preempted_or_fail "$status" "the training command"
  fi
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

attempt=1
while :; do
  run "${qr[@]}" create "$name" --node-id="$name" --accelerator-type="$accelerator" \
    --runtime-version="$runtime" --spot "${where[@]}" || fail 1 "could not queue $name"
  queued=1
  reason=""
  wait_until_active
  if [[ -z $reason ]]; then install; fi
  if [[ -z $reason ]]; then train; fi
  if [[ -z $reason ]]; then
    if ((dry_run && max_restarts)); then
      echo "# after a preemption, up to $max_restarts times:" \
        "delete the slice, then repeat from create"
      show "${qr[@]}" delete "$name" "${where[@]}" --force --quiet
    fi
    exit 0
  fi
  restarts=$((attempt - 1))
  ((restarts < max_restarts)) ||
    fail 3 "preempted: $reason; no restarts left (--max-restarts $max_restarts)"
  say "restart $((restarts + 1)) of $max_restarts after preemption: $reason"
  delete_slice
  attempt=$((attempt + 1))
done
