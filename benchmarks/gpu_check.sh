#!/usr/bin/env bash
# GPU check for the foundation backbones: every CHGNet and Orb method's --quick path on CUDA,
# with the fit and prediction times of each run. Sized for < 5 min on one H100 (not yet run
# on one: no GPU was lent to this project so far). The device has no network, so Orb runs
# on a default-size orb-v3 architecture with random weights (same cost as the real ones),
# saved as a checkpoint and passed with --weights, the path users without a network take.
#
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (after pip install -e ".[chgnet,orb]")
#        DEVICE=cpu bash benchmarks/gpu_check.sh   (the same runs on the CPU, for comparison)
set -euo pipefail
out=${1:-gpu-check}
device=${DEVICE:-cuda}
mkdir -p "$out"
export TQDM_DISABLE=1
python - "$out/orb-v3-random.ckpt" <<'PY'
import sys, torch
from orb_models.forcefield import pretrained
from orb_models.forcefield.atomic_system import SystemConfig
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")
torch.manual_seed(0)
model = pretrained.orb_v3_conservative_architecture(
    system_config=SystemConfig(radius=6.0, max_num_neighbors=120))
torch.save(model.state_dict(), sys.argv[1])
print("orb-v3 (default size, random weights):", sum(p.numel() for p in model.parameters()),
      "parameters")
PY
for method in p-chgnet blip-chgnet ensemble-chgnet mcdropout-chgnet \
              p-orb blip-orb ensemble-orb mcdropout-orb; do
  weights=()
  [[ $method == *-orb ]] && weights=(--weights "$out/orb-v3-random.ckpt")
  uqbench run --method "$method" --dataset silica-bks-small --quick --device "$device" \
    "${weights[@]}" --out "$out/records" > "$out/$method.log" 2>&1 \
    || { echo "$method FAILED:"; tail -3 "$out/$method.log"; }
done
python - "$out/records" <<'PY'
import json, sys
from pathlib import Path
print(f"{'method':<18} {'device':<7} {'fit s':>7} {'predict s/structure':>20}")
for path in sorted(Path(sys.argv[1]).rglob("*.json")):
    r = json.loads(path.read_text())
    t = r["timings"]
    print(f"{r['method']['key']:<18} {r['device']:<7} {t['fit_s']:>7.1f} "
          f"{t['predict_s_per_structure']:>20.4f}")
PY
