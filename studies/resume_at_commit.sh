#!/usr/bin/env bash
# Run (or resume) a study at the commit its records were made at, from a clean worktree,
# writing records into this checkout's leaderboard/records.
#
#   studies/resume_at_commit.sh COMMIT STUDY.yaml [sweep options...]
#   e.g. studies/resume_at_commit.sh fbe557d studies/silica-bks.yaml --workers 1
#
# The worktree's own code runs (PYTHONPATH), and its own entry points: a dist-info
# written from that commit's pyproject.toml sits first on the path, so the methods,
# datasets and metrics are that commit's even where a newer uqbench is installed. The
# records then carry COMMIT and dirty = false, and the sweep skips what is recorded.
set -euo pipefail
commit=${1:?commit}; study=${2:?study file}; shift 2
here=$(git rev-parse --show-toplevel)
tree="$here/../uqbench-at-${commit:0:7}"
if [ ! -d "$tree" ]; then
    git -C "$here" worktree add --detach "$tree" "$commit"
fi
meta="$tree/uqbench-0.1.0.dist-info"
if [ ! -d "$meta" ]; then
    mkdir -p "$meta"
    python - "$tree/pyproject.toml" "$meta" <<'EOF'
import sys, tomllib
cfg = tomllib.loads(open(sys.argv[1]).read())
out = []
for group, items in cfg["project"].get("entry-points", {}).items():
    out.append(f"[{group}]")
    out += [f"{k} = {v}" for k, v in items.items()]
    out.append("")
open(f"{sys.argv[2]}/entry_points.txt", "w").write("\n".join(out))
open(f"{sys.argv[2]}/METADATA", "w").write("Metadata-Version: 2.1\nName: uqbench\nVersion: 0.1.0\n")
EOF
fi
study=$(realpath "$study")
cd "$tree"
out=${UQBENCH_OUT:-$here/leaderboard/records}
PYTHONPATH="$tree" exec python -m uqbench.cli sweep "$study" --out "$out" "$@"
