#!/usr/bin/env bash
# On any machine with an NVIDIA GPU: what the driver reports, what dotsocr discovers through
# NVML, and the vLLM launch plan for the real card. No model or download is needed.
# Record the output in docs/gpu-check.md.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else  # a bare machine: the package from the checkout, with whatever Python it has
    PY=${PYTHON:-python3}
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "## nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total,memory.free,compute_cap,driver_version \
    --format=csv || echo "(nvidia-smi failed: $?)"
echo
echo "## dotsocr gpus (NVML first, nvidia-smi as fallback)"
"$PY" -m dotsocr gpus
echo
echo "## dotsocr plan (the real card)"
"$PY" -m dotsocr plan
echo
echo "## dotsocr plan --quantization fp8"
"$PY" -m dotsocr plan --quantization fp8 | sed -n '1,20p'
