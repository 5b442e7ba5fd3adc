#!/usr/bin/env bash
# buf lint, and buf breaking against the base branch (invariant 6: v1 evolves additively).
# The base is $OA_BUF_AGAINST, else origin/main, else main; when that is this very commit
# (CI on a clean clone of main), the previous commit is the base, so the last change is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
buf lint proto
base="${OA_BUF_AGAINST:-}"
if [ -z "$base" ]; then
  for candidate in origin/main main; do
    if git rev-parse -q --verify "$candidate^{commit}" >/dev/null; then base=$candidate; break; fi
  done
fi
if [ -n "$base" ] && [ "$(git rev-parse "$base")" = "$(git rev-parse HEAD 2>/dev/null || true)" ]; then
  base="HEAD~1"
fi
if [ -z "$base" ] || ! git rev-parse -q --verify "$base^{commit}" >/dev/null; then
  echo "buf breaking: no base commit to compare with; skipped"; exit 0
fi
if ! git cat-file -e "$base:proto/buf.yaml" 2>/dev/null; then
  echo "buf breaking: $base has no proto/ yet; nothing to break"; exit 0
fi
buf breaking proto --against ".git#ref=$(git rev-parse "$base"),subdir=proto"
echo "buf lint and buf breaking (against $base) passed"
