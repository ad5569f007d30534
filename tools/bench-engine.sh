#!/usr/bin/env bash
# Side-by-side storage-engine figures: our ring and store against fio
# (--ioengine=io_uring --direct=1) on the same file, in one run, as ratios.
# Prints a markdown table for docs/benchmarks.md.
#
#   tools/bench-engine.sh [DIR]      (default DIR: ./demo; needs ~4 GiB free)
#   ROUNDS=3 RUNTIME=10 SIZE=1G tools/bench-engine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-demo}
ROUNDS=${ROUNDS:-2}
RUNTIME=${RUNTIME:-5}
SIZE=${SIZE:-1G}
CFS=${CFS:-./bin/cfs}
mkdir -p "$DIR"
F=$DIR/bench-fio.dat
S=$DIR/bench-store.dat
command -v fio >/dev/null || { echo "fio is missing: run 'make tools'" >&2; exit 1; }
[[ -x $CFS ]] || { echo "$CFS is missing: run 'make build'" >&2; exit 1; }

common="--size=$SIZE --runtime=$RUNTIME --time_based --direct=1"
field() { # FILE KIND FIELD -> sum over jobs
  python3 -c 'import json,sys; t=open(sys.argv[1]).read(); j=json.loads(t[t.index("{"):]); print(sum(float(x[sys.argv[2]][sys.argv[3]]) for x in j["jobs"]))' "$@"
}
ratio() { python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print(f"{a/b:.3f}" if b else "inf")' "$1" "$2"; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

echo "laying out $F ($SIZE) with fio" >&2
fio --name=lay --filename="$F" --size="$SIZE" --rw=write --bs=1M --direct=1 --ioengine=io_uring >/dev/null

row() { # LABEL KIND METRIC OURS BASE
  printf '| %s | %s | %.0f | %.0f | %s |\n' "$1" "$3" "$4" "$5" "$(ratio "$4" "$5")"
}

echo "| workload | metric | ClaudeFS | fio | ratio |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for c in "randread 4k 32" "randread 4k 128" "write 1M 8" "read 1M 8"; do
    set -- $c
    args="--rw=$1 --bs=$2 --iodepth=$3"
    kind=read; [[ $1 == write ]] && kind=write
    metric=iops; [[ $2 == 1M ]] && metric=bw
    fio --name=a --filename="$F" $common --ioengine=io_uring $args --output-format=json >"$T/fio.json"
    $CFS bench run --target "device:$F" $common $args --output-format=json --progress=false >"$T/cfs.json"
    row "device $1 bs=$2 qd=$3 (round $round)" "$kind" "$metric" "$(field "$T/cfs.json" $kind $metric)" "$(field "$T/fio.json" $kind $metric)"
  done
  fio --name=a --filename="$F" $common --ioengine=io_uring --rw=randwrite --bs=4k --iodepth=32 --output-format=json >"$T/fio-w.json"
  fio --name=a --filename="$F" $common --ioengine=io_uring --rw=randread --bs=4k --iodepth=32 --output-format=json >"$T/fio-r.json"
  rm -f "$S"
  $CFS bench run --target "store:$S" $common --rw=randwrite --bs=4k --iodepth=32 --output-format=json --progress=false >"$T/st-w.json" 2>"$T/st-w.err"
  $CFS bench run --target "store:$S" $common --rw=randread --bs=4k --iodepth=32 --output-format=json --progress=false >"$T/st-r.json" 2>"$T/st-r.err"
  row "store durable 4k puts qd=32 vs fio randwrite, no fsync (round $round)" write iops "$(field "$T/st-w.json" write iops)" "$(field "$T/fio-w.json" write iops)"
  row "store 4k gets + CRC qd=32 vs fio randread (round $round)" read iops "$(field "$T/st-r.json" read iops)" "$(field "$T/fio-r.json" read iops)"
  grep -h "durable appends" "$T/st-w.err" >&2 || true
done
rm -f "$F" "$S"
