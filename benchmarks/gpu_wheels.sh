#!/usr/bin/env bash
# Wheels of the Python packages a GPU image with JAX, Flax, Optax and Orbax may lack,
# for benchmarks/gpu_check.sh on a host that reaches no package index: run this where
# one is reachable, then take the folder along.
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]   # default 3.12, the GPU image's
#
# Writes benchmarks/results/tmp/gpu_wheels/ (ignored by git, about 8 MB): the pins of
# requirements.txt for ml-collections, distrax and tfp-nightly, and the small packages
# tfp-nightly needs beyond what such an image holds (decorator, gast, dm-tree).
set -euo pipefail

cd "$(dirname "$0")/.."
python_version="${1:-3.12}"
dest=benchmarks/results/tmp/gpu_wheels
mkdir -p "${dest}"
pin() {  # the version requirements.txt pins for package $1
  grep -i "^$1==" requirements.txt | sed 's/[[:space:]]*#.*//'
}
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version "${python_version}" --dest "${dest}" \
  "$(pin ml-collections)" "$(pin distrax)" "$(pin tfp-nightly)" \
  decorator==5.2.1 gast==0.7.0 dm-tree==0.1.10
ls "${dest}"
