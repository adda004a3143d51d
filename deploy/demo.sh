#!/usr/bin/env bash
# The whole pipeline on the embedded (generated) sample crawl. `make demo` runs this.
# Stages: extract, dedup, download, clip, compact, index, export, then stats and the lake check. Each runs through the
# project's one command, l5s (spark-submit with the venv's Python; `l5s JOB --help`).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
lake=${DEMO_LAKE:-$here/demo-lake}
crawl=${DEMO_CRAWL:-$here/build/sample-crawl}
py=${L5S_VENV:-$here/.venv}/bin/python
if [ ! -f "$crawl/wat.paths.gz" ]; then
  "$py" -m laion5b_spark.sample --out "$crawl" --files 4 --pages-per-file 150
fi
l5s=${L5S_VENV:-$here/.venv}/bin/l5s

echo "== extract: sample crawl WAT files -> $lake/pairs"
$l5s extract --lake "$lake" --input "$crawl/wat.paths.gz" --input-base-url "$crawl/" \
  --config conf/pipeline/sample.toml
echo
echo "== dedup: $lake/pairs -> $lake/pairs_unique (url+text, incremental; a rerun adds nothing)"
$l5s dedup --lake "$lake" --config conf/pipeline/sample.toml
echo
# the sample crawl's image hosts do not exist: a local server answers for all of them (download.connect_to),
# and its address is allow-listed (the job refuses loopback addresses otherwise)
portfile=$(mktemp)
rm -f "$portfile"
"$py" -m laion5b_spark.sample.image_server --port-file "$portfile" >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$portfile" ] && break; sleep 0.1; done
port=$(cat "$portfile")
echo "== download: $lake/pairs_unique -> $lake/images (sample image server on 127.0.0.1:$port)"
$l5s download --lake "$lake" --config conf/pipeline/sample.toml \
  --set "download.connect_to=[\"*=127.0.0.1:$port\"]" --set "download.allow=[\"127.0.0.1:$port\"]"
echo
echo "== clip: $lake/images -> $lake/scored + $lake/dataset (tiny CLIP trained on coloured shapes: it judges the shape pictures)"
$l5s clip --lake "$lake" --config conf/pipeline/sample.toml
echo
echo "== compact: $lake/images without the image bytes of rows below every CLIP threshold (rows and sha256 stay)"
$l5s compact --lake "$lake" --config conf/pipeline/sample.toml

echo "== index: $lake/scored -> $lake/index/{image,text} (autofaiss) + $lake/dedup_images (near and exact duplicate images)"
$l5s index --lake "$lake" --config conf/pipeline/sample.toml
echo
echo "== export: $lake/dataset minus $lake/dedup_images -> $lake/release (LAION parquet, webdataset, Hugging Face folder)"
$l5s export --lake "$lake" --config conf/pipeline/sample.toml
echo
echo "== stats: the funnel from pairs to release, why rows left, plots -> $lake/_reports/stats/report.html (no Spark)"
$l5s stats --lake "$lake"
echo
echo "== the lake, checked (manifests, files and sizes, ledgers, plain readers' view of data/, one row per uid)"
$l5s describe "$lake" --check
