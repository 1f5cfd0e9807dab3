#!/usr/bin/env bash
# GPU benchmark for a machine with PyTorch + CUDA but no Ray and no network (issue 16).
#
#   bench/gpu.sh --fetch-wheels     here (with PyPI): build the small pure-Python wheels the machine
#                                   lacks into .whl/ (git-ignored; about 1 MB)
#   bench/gpu.sh                    there: install .whl/ into /tmp/site, then python3 bench/gpu.py
#   bench/gpu.sh --dry              anywhere: bench/gpu.py --dry (CPU, tiny sizes; the test suite runs it)
#
# Carried: the packages epg's encoders import that such a machine does not hold (PyTorchVideo and its
# small needs, librosa's lazy top level); numpy, pillow, pyarrow, tabulate, portalocker, tqdm and
# PyYAML are expected there. The printed table is also written to $EPG_GPU_BENCH_OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(pytorchvideo==0.1.5 fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor==3.3.0 librosa==0.11.0)
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    rm -rf .whl && mkdir -p .whl
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir .whl "${WHEELS[@]}"
    ls -l .whl
    exit 0
fi

if [[ "${1:-}" != "--dry" && -d .whl ]]; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
exec "$PYTHON" bench/gpu.py "$@"
