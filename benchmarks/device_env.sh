# Source this on a lent GPU machine that has no network (PyTorch, transformers and accelerate preinstalled):
#   source benchmarks/device_env.sh            (benchmarks/device_run.sh does it for you)
# - installs the wheels carried in .whl/ (kornia, kornia_rs: `pip download --python-version 3.12 ...` here);
# - unpacks the benchmark data built here (.carry/*.tar.xz: sequences without depth, scenes without their
#   .ply/.glb exports; from `python benchmarks/quality.py --prepare-only`) into benchmarks/work/quality;
# - scene.json holds absolute paths of the machine that built it: /work/main is linked to this checkout.
# Packing, on the machine that built the data (keep .carry/ and .whl/ out of git; 64 MiB travel at most per call,
# wheels 7 MB; 6 training sequences: recon 23 + 26 MB, real 25 + 24 MB, so carry the real scenes in a later call
# and start their runs there with a second `device_run.sh start`):
#   cd benchmarks/work/quality && for p in street room; do tar cf - --exclude='*/depth' --exclude='*.ply' \
#     --exclude='*.glb' $p/data $p/scenes-stride1-known-k/recon-* | xz -6 -T2 -c > ../../../.carry/$p.tar.xz; done
#   (real: `$p/scenes-stride1-known-k/real-*` alone into .carry/$p-real.tar.xz, in place of the first tars)
if ls .whl/*.whl > /dev/null 2>&1; then  # a later call on the same machine may come without them
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || return 1
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
mkdir -p /work benchmarks/work/quality
[ -e /work/main ] || ln -s "$PWD" /work/main
for f in .carry/*.tar.xz; do [ -e "$f" ] && tar xJf "$f" -C benchmarks/work/quality; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, accelerate, kornia; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'kornia', kornia.__version__, 'cuda', torch.cuda.is_available())"
