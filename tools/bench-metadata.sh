#!/usr/bin/env bash
# The metadata acceptance run (../shared/acceptance/05-metadata's commands) with the
# control processes' CPU: idle (10 s, no load, 15 s after `cfs dev up`) and during the
# create phase (8 s, from 2 s after their CPU rises), optionally with a CPU profile of
# each control process over the same 8 s. Run it under the shared benchmark lock:
#
#   flock -o /tmp/cfs-bench.lock tools/bench-metadata.sh BINDIR OUTDIR [prof]
#
# BINDIR holds cfs and cfsctl (`make build` → ./bin). OUTDIR gets idle, busy, result
# (creates/s, p50, p99 per phase), md.json, and node-N.pprof with `prof`.
# CPU per create = busy's "sum s" / (8 × creates/s).
set -u
B=$1; O=$2; PROF=${3:-}
DEVJSON=${DEVJSON:-$(dirname "$(readlink -f "$0")")/../../shared/acceptance/lib/devjson.py}
D=${DEV_DIR:-/tmp/meta-dev}; rm -rf "$D"; mkdir -p "$O"
"$B/cfs" dev up --nodes 3 --shards 256 --dir "$D" >"$O/up.log" 2>&1 || { echo "dev up failed"; tail "$O/up.log"; exit 1; }
trap '"$B/cfs" dev down --dir "$D" >/dev/null 2>&1; rm -rf "$D"' EXIT
eval "$("$B/cfs" dev env --dir "$D")"
pids=$(python3 -c "
import json,glob
for f in sorted(glob.glob('$D/node*/pids.json')): print(json.load(open(f))['control'])")
echo "pids: $pids" >"$O/pids"
cpu() { for p in $pids; do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd' '; }
tot() { for p in $pids; do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd+ | bc; }
sleep 15
a=$(cpu); sleep 10; b=$(cpu)
python3 -c "
a=list(map(int,'$a'.split())); b=list(map(int,'$b'.split()))
print('idle control CPU % of a core (10 s):', ' '.join('%.1f'%((y-x)/10) for x,y in zip(a,b)))" | tee "$O/idle"
uptime >>"$O/idle"
addr=$("$B/cfs" dev status --json --dir "$D" | python3 "$DEVJSON" control)
"$B/cfs" bench run --target "cluster:$addr" --profile metadata --numjobs 16 --dirs 64 --files 2000 --output-format=json >"$O/md.json" 2>"$O/md.err" &
bp=$!
# The bench writes its progress only at the end: the create phase is found by the
# control processes' CPU (>= 20 ticks in 0.25 s together).
p=$(tot); for i in $(seq 200); do sleep 0.25; c=$(tot); (( c-p >= 20 )) && break; p=$c; done
sleep 2
a=$(cpu)
if [[ -n $PROF ]]; then
  pp=""
  for n in node-1 node-2 node-3; do "$B/cfsctl" profile --node $n --process control --duration 8s -o "$O/$n.pprof" >/dev/null 2>&1 & pp="$pp $!"; done
  wait $pp
else sleep 8; fi
b=$(cpu)
python3 -c "
a=list(map(int,'$a'.split())); b=list(map(int,'$b'.split()))
print('create-phase control CPU % of a core (8 s):', ' '.join('%.1f'%((y-x)/8) for x,y in zip(a,b)), 'sum s:', sum(y-x for x,y in zip(a,b))/100)" | tee "$O/busy"
uptime >>"$O/busy"
wait $bp
python3 -c "
import json; t=open('$O/md.json').read(); j=json.loads(t[t.index('{'):])
for k in ('create','stat','unlink'):
  c=j[k]; print(k, round(c['ops_per_sec']), 'p50', c.get('p50_us'), 'p99', c['p99_us'])" | tee "$O/result"
