#!/usr/bin/env bash
# The whole pipeline on the embedded (generated) sample crawl. `make demo` runs this.
# Stages so far: extract, dedup. Each later stage adds its spark-submit line here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
lake=${DEMO_LAKE:-$here/demo-lake}
crawl=${DEMO_CRAWL:-$here/build/sample-crawl}
py=${L5S_VENV:-$here/.venv}/bin/python
if [ ! -f "$crawl/wat.paths.gz" ]; then
  "$py" -m laion5b_spark.sample --out "$crawl" --files 4 --pages-per-file 150
fi
submit="deploy/submit.sh --properties-file conf/spark/local.conf"
echo "== extract: sample crawl WAT files -> $lake/pairs"
$submit jobs/extract.py --lake "$lake" --input "$crawl/wat.paths.gz" --input-base-url "$crawl/" \
  --config conf/pipeline/sample.toml
echo
echo "== dedup: $lake/pairs -> $lake/pairs_unique (url+text, incremental; a rerun adds nothing)"
$submit jobs/dedup.py --lake "$lake" --config conf/pipeline/sample.toml
echo
echo "== the lake"
"$py" -m laion5b_spark.describe "$lake"
