#!/bin/bash
# dataplane-ab.sh ROUNDS LABEL=CFS_BINARY[:VAR=VALUE,...] ...
#
# A/B runs of the issue 3 check (../shared/acceptance/03-dataplane) for
# several cfs binaries, in alternation: each round runs, for each binary in
# the order given, fio's local 4 KiB randread qd32 on a 1 GiB file and then
# `cfs bench run --target dataplane:...` (same options as the check) against
# a `cfs dataplane` of that binary (with the environment variables given, if
# any). The device file is kept between runs, so the bench only stats the
# shards the first run laid out. Prints one line per run: IOPS and p50 of
# both, and the ratio. Run it under the shared lock:
#
#   flock -o /tmp/cfs-bench.lock tools/dataplane-ab.sh 3 old=/tmp/cfs.old new=bin/cfs
#
# PERFCMD, when set, runs as `$PERFCMD PID -- sleep 2` on the dataplane
# PERFDELAY seconds (default 5) into the bench, its output in $W/perf.LABEL.ROUND
# (e.g. PERFCMD="perf stat --per-thread -e task-clock,context-switches -p").
set -u
W=${AB_DIR:-/tmp/dp-ab}; mkdir -p "$W"
F=$W/fio.dat; DEV=$W/dev.dat
rounds=$1; shift
[[ -f $F ]] || fio --name=lay --filename="$F" --size=1G --rw=write --bs=1M --direct=1 --ioengine=io_uring >/dev/null 2>&1
common="--size=512M --runtime=5 --time_based --direct=1"
# iops and p50 (µs) of the reads in a fio-shaped JSON file
j() { python3 -c "
import json,sys
t=open(sys.argv[1]).read(); t=t[t.index('{'):]; j=json.loads(t)['jobs'][0]['read']
p=j.get('clat_ns',{}).get('percentile',{})
print('%.0f %.0f' % (j['iops'], float(p.get('50.000000',0))/1000))" "$1"; }
for r in $(seq "$rounds"); do
  for spec in "$@"; do
    label=${spec%%=*}; rest=${spec#*=}; bin=${rest%%:*}; envs=""; [[ $rest == *:* ]] && envs=${rest#*:}
    fio --name=a --filename="$F" $common --ioengine=io_uring --rw=randread --bs=4k --iodepth=32 --output-format=json >"$W/fio.json" 2>/dev/null
    port=$((20000 + RANDOM % 20000))
    env ${envs//,/ } "$bin" dataplane --device "$DEV" --device-size 2G --listen "127.0.0.1:$port" --control-socket "$W/ctl.sock" >"$W/log.$label" 2>&1 &
    pid=$!
    for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
    "$bin" bench run --target "dataplane:127.0.0.1:$port" $common --rw=randread --bs=4k --iodepth=32 --output-format=json >"$W/dp.json" 2>"$W/dp.err" &
    bpid=$!
    if [[ -n ${PERFCMD:-} ]]; then sleep "${PERFDELAY:-5}"; $PERFCMD $pid -- sleep 2 >"$W/perf.$label.$r" 2>&1; fi
    wait $bpid
    kill $pid; wait $pid 2>/dev/null
    read -r fi fp < <(j "$W/fio.json"); read -r di dp < <(j "$W/dp.json")
    echo "round $r $label dp $di iops p50 ${dp}us  fio $fi iops p50 ${fp}us ratio $(python3 -c "print(f'{$di/$fi:.3f}')") load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
