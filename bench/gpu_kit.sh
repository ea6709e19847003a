#!/usr/bin/env bash
# The GPU check (issue 16) as one device call, from the repository root.
#   bash bench/gpu_kit.sh fetch   here: wheels of what the GPU machine's image lacks, into .whl/
#   bash bench/gpu_kit.sh run     there, with .whl carried: installs them and this tree into
#                                 /tmp/site, runs bench/gpu.py and tests/test_gpu.py; RESULTS.md
#                                 and the logs go to $OUT
# The device image holds torch, torchaudio, numpy, scikit-learn, click, tqdm and pytest (see the
# device library's KINDS.md); these are the rest, and click at the version we need, as this venv has them.
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=(optuna alembic Mako SQLAlchemy colorlog soundfile cffi pycparser plotly click)

fetch() {
    local py=${KIT_PYTHON_VERSION:-3.12} pins
    pins=$(.venv/bin/python -m pip freeze | grep -i -E "^($(IFS='|'; echo "${KIT[*]}"))==") || return 1
    rm -rf .whl && mkdir .whl
    # shellcheck disable=SC2086  # one argument per pin
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $pins 2>&1 | grep -v '^WARNING: Location' || true
    [ "$(ls .whl | wc -l)" = "${#KIT[@]}" ] || { echo "gpu_kit: expected ${#KIT[@]} wheels"; return 1; }
    ls .whl && du -sh .whl
}

run() {
    local out=${OUT:-/tmp/gpu-kit-out}
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_kit: installing the wheels failed"; return 1; }
    # this tree as pyproject.toml lays it out (search/ is sceneclf.spaces), without a build backend
    rm -rf /tmp/site/sceneclf && cp -r sceneclf /tmp/site/sceneclf && cp -r search /tmp/site/sceneclf/spaces
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    timeout "${KIT_BENCH_S:-420}" python3 bench/gpu.py ${KIT_BENCH_ARGS:-} 2>&1 | tee "$out/gpu.log"
    local bench=${PIPESTATUS[0]}
    cp bench/RESULTS.md "$out/RESULTS.md"
    timeout "${KIT_TEST_S:-120}" python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/test_gpu.log"
    local tests=${PIPESTATUS[0]}
    echo "gpu_kit: bench/gpu.py exited $bench, tests/test_gpu.py $tests"
    [ "$bench" = 0 ] && [ "$tests" = 0 ]
}

case "${1:-}" in
    fetch) fetch ;;
    run) run ;;
    *) echo "usage: bash bench/gpu_kit.sh fetch|run"; exit 2 ;;
esac
