#!/usr/bin/env bash
# Prepare the one-shot GPU check (`mclstexp bench gpu`) for a machine without network.
#
# The GPU machine has python3 (3.12) with torch, timm, numpy, scipy, pandas, scikit-learn, h5py,
# tifffile, matplotlib, tqdm and huggingface_hub, but no anndata, zarr, numcodecs, imagecodecs or
# pooch. This script puts into the git-ignored folder .whl/:
#   - this project's abi3 wheel (manylinux2014 through maturin --zig when ziglang is installed,
#     else the plain wheel pip builds),
#   - the missing dependencies as CPython 3.12 manylinux wheels (pinned; pandas too, so that
#     anndata gets the pandas 2 it needs whatever the machine has),
# checks that the wheels plus the tracked source tree stay under 64 MiB (what travels to the
# machine), and prints the command to run there.
#
# Usage: benches/gpu/prepare.sh [PYTHON]     (PYTHON builds the wheel; default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-python3}
out=.whl
rm -rf "$out" && mkdir -p "$out"

echo "== the project's wheel"
if "$PY" -c "import ziglang" 2>/dev/null && "$PY" -m maturin --version >/dev/null 2>&1; then
    PATH="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')"):$PATH" \
        "$PY" -m maturin build --release --zig --compatibility manylinux2014 --out "$out"
else
    "$PY" -m pip wheel -q --no-deps --wheel-dir "$out" .
fi

echo "== the dependencies the GPU machine lacks (CPython 3.12, manylinux x86_64)"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$out" \
    anndata==0.12.19 zarr==3.1.6 numcodecs==0.16.6 imagecodecs==2026.3.6 pooch==1.9.0 \
    donfig==0.8.1.post1 array-api-compat==1.16.0 legacy-api-wrap==1.5 natsort==8.4.0 \
    google-crc32c==1.9.0 scverse-misc==0.0.3 session-info2==0.4.1 platformdirs==4.14.9 \
    pandas==2.3.3

echo "== sizes"
git ls-files -z | "$PY" -c '
import os, pathlib, sys
wheels = sum(p.stat().st_size for p in pathlib.Path(".whl").glob("*.whl"))
tree = sum(os.path.getsize(f) for f in sys.stdin.read().split("\0") if f and os.path.isfile(f))
for p in sorted(pathlib.Path(".whl").glob("*.whl")):
    print(f"  {p.stat().st_size / 2**20:7.2f} MiB  {p.name}")
print(f"wheels {wheels / 2**20:.1f} MiB + tracked source tree {tree / 2**20:.1f} MiB"
      f" = {(wheels + tree) / 2**20:.1f} MiB (limit 64 MiB)")
sys.exit(0 if wheels + tree < 64 * 2**20 else "too large for the device machine")
'

cat <<'CMD'

== on the GPU machine (device tool: carry [".whl"]), from the repository root:
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && cd /tmp && python3 -m mclstexp bench gpu --out "$OUT" --budget-s 420
CMD
