#!/usr/bin/env bash
# The accelerator suite on one GPU or TPU host (under 8 minutes on an H200): lmscale's train
# step for GPT-2 small and medium at 1,024 tokens and the BERT-Large SQuAD step at 384, then
# the same workloads in Hugging Face PyTorch (when torch and transformers are installed),
# then one table. See benchmarks/accelerator_suite.py for what is measured.
#
#   bash benchmarks/accelerator_suite.sh [OUT_DIR]    # default runs/accelerator_suite
set -uo pipefail
out=${1:-runs/accelerator_suite}
here=$(dirname "$0")
mkdir -p "$out"
status=0
# Each part in its own process, so JAX's and PyTorch's allocators never share the device.
python3 "$here/accelerator_suite.py" lmscale --out "$out" || status=1
python3 "$here/accelerator_suite.py" pytorch --out "$out" || status=1
python3 "$here/accelerator_suite.py" report --out "$out"
exit $status
