#!/usr/bin/env bash
# Copy a worktree's files (tracked + untracked-not-ignored) into <main checkout>/.wt/<name>/ so a
# device `run` can carry it: the device tool only sends the main checkout, so a helper working in
# its own git worktree stages its tree there and names `.wt/<name>` (and `.whl`) in `carry`:
#
#   tools/stage_for_device.sh NAME [--with-models]     # run from inside the worktree
#   device run:  cd .wt/NAME && WHL_DIR=../../.whl OUT=$OUT bash tools/gpu_check.sh ...
#
# models/ (12 MB) is left out unless --with-models: the carried tree must stay under 64 MiB.
set -euo pipefail
name=${1:?usage: tools/stage_for_device.sh NAME [--with-models]}
with_models=${2:-}
src=$(git rev-parse --show-toplevel)
main=$(dirname "$(git rev-parse --path-format=absolute --git-common-dir)")
dest="$main/.wt/$name"
rm -rf "$dest"
mkdir -p "$dest"
cd "$src"
git ls-files --cached --others --exclude-standard -z \
  | { if [[ $with_models == --with-models ]]; then cat; else grep -zv '^models/'; fi; } \
  | xargs -0 -I{} sh -c '[ -f "{}" ] && mkdir -p "'"$dest"'/$(dirname "{}")" && cp -p "{}" "'"$dest"'/{}" || true'
echo "staged $(du -sh "$dest" | cut -f1) of $src into $dest (carry .wt/$name)"
