#!/usr/bin/env bash
# Heartbeat benchmark, one run: RTT of the XDP responder and of the user-space responder, idle and
# with both CPUs saturated; false losses of a 1 ms timeout under load (wall-clock vs. evidence
# detector); FRR bfdd at its smallest interval for comparison. Root; two network namespaces joined
# by one veth pair in 198.18.0.0/15; everything it creates is removed on exit, even on failure.
#
# usage: run.sh [--long|--quick] [--build-dir DIR] [--out DIR] [--no-bfd|--bfd-only]
#   --long       10-minute loss test under load (the issue's target); default 2 minutes
#   --build-dir  where hb_rtt/hb_responder were built (default: /work/main/build)
#   --out        results folder (default: bench/heartbeat/results); JSON + results.txt
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build_dir="$here/../../build"
out_dir="$here/results"
loss_s=120
user_loss_s=60
bfd_flap_s=60
run_bfd=1
quick=0
run_hb=1
while [ $# -gt 0 ]; do
    case "$1" in
        --long) loss_s=600; user_loss_s=120; bfd_flap_s=120 ;;
        --quick) quick=1 ;;  # smoke test of the script itself: tiny sizes, numbers meaningless
        --build-dir) build_dir=${2:?--build-dir needs a value}; shift ;;
        --out) out_dir=${2:?--out needs a value}; shift ;;
        --no-bfd) run_bfd=0 ;;
        --bfd-only) run_hb=0 ;;
        *) echo "run.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (namespaces, XDP, SCHED_FIFO)" >&2; exit 2; }
hb_rtt="$build_dir/bench/heartbeat/hb_rtt"
hb_resp="$build_dir/bench/heartbeat/hb_responder"
for b in "$hb_rtt" "$hb_resp"; do
    [ -x "$b" ] || { echo "run.sh: '$b' not built (ninja -C $build_dir hb_rtt hb_responder)" >&2; exit 2; }
done
for t in stress-ng ip nft jq; do
    command -v "$t" >/dev/null || { echo "run.sh: '$t' not installed" >&2; exit 2; }
done

# Fixed sizes: 5 runs x 20 000 probes = 100 000 probes per case, 100 us apart (2 s per run).
interval_us=100
count=20000
runs=5
warmup=2000
timeout_us=1000
if [ "$quick" = 1 ]; then count=2000 runs=2 warmup=200 loss_s=5 user_loss_s=5 bfd_flap_s=5; fi
stress_bound_s=$((loss_s + bfd_flap_s * 2 + 600))  # a leaked stress-ng still ends on its own

sfx=$$
ns_p="hbp-$sfx"         # prober ("standby")
ns_r="hbr-$sfx"         # responder ("active")
if_p="hbp$sfx"
if_r="hbr$sfx"
ip_p=198.19.77.1
ip_r=198.19.77.2
work=$(mktemp -d /tmp/hb-bench.XXXXXX)
pids=()

cleanup() {
    local rc=$?
    set +e
    for pid in "${pids[@]}"; do
        kill -CONT "$pid" 2>/dev/null
        kill "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    ip netns del "$ns_p" 2>/dev/null
    ip netns del "$ns_r" 2>/dev/null
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a background command, remembering its PID for cleanup. The PID lands in $last_pid.
spawn() {
    "$@" &
    last_pid=$!
    pids+=("$last_pid")
}
# Ends one PID we started and forgets it.
reap() {
    local pid=$1 keep=() p
    kill -CONT "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

mkdir -p "$out_dir"
txt="$out_dir/results.txt"
: >"$txt"
say() { echo "$*" | tee -a "$txt"; }

ip netns add "$ns_p"
ip netns add "$ns_r"
ip link add "$if_p" type veth peer name "$if_r"
ip link set "$if_p" netns "$ns_p"
ip link set "$if_r" netns "$ns_r"
ip -n "$ns_p" addr add "$ip_p/30" dev "$if_p"
ip -n "$ns_r" addr add "$ip_r/30" dev "$if_r"
for n in "$ns_p" "$ns_r"; do ip -n "$n" link set lo up; done
ip -n "$ns_p" link set "$if_p" up
ip -n "$ns_r" link set "$if_r" up

# The shared key: 128 random bits, 0600 (load_key_file refuses a group/world-readable key).
key="$work/hb.key"
(umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$key")

say "heartbeat benchmark $(date -u +%FT%TZ) on $(hostname): kernel $(uname -r), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
say "load average at start (the machine is shared): $(cut -d' ' -f1-3 /proc/loadavg)"
say "probes: ${runs} runs x ${count} after ${warmup} warm-up, every ${interval_us} us; prober pinned to cpu 1"

stress_pid=
load_on() {
    spawn stress-ng --cpu 2 --timeout "${stress_bound_s}s" --quiet
    stress_pid=$last_pid
    sleep 1  # let the workers spin up
}
load_off() { reap "$stress_pid"; stress_pid=; }

# probe LABEL [extra hb_rtt args...]
probe() {
    local label=$1
    shift
    ip netns exec "$ns_p" "$hb_rtt" --target "$ip_r" --key-file "$key" --xdp-pass "$if_p" \
        --interval-us "$interval_us" --count "$count" --runs "$runs" --warmup "$warmup" --cpu 1 \
        --label "$label" --json "$out_dir/$label.json" "$@" | tee -a "$txt"
}

if [ "$run_hb" = 1 ]; then
# ---- 1. XDP responder (the real Responder, native mode on the responder's veth) ----
spawn ip netns exec "$ns_r" "$hb_resp" xdp --ifname "$if_r" --key-file "$key"
resp_pid=$last_pid
sleep 1
kill -0 "$resp_pid" || { echo "run.sh: XDP responder did not start" >&2; exit 1; }
ip -n "$ns_r" -d link show "$if_r" | grep -o 'prog/xdp[^ ]* id [0-9]*' | sed 's/^/responder: /' | tee -a "$txt"
probe xdp-idle
load_on
probe xdp-load
probe xdp-load-nort --rt-prio 0
probe xdp-loss --loss-seconds "$loss_s" --timeout-us "$timeout_us"
load_off
reap "$resp_pid"

# ---- 2. user-space responder (the agent's fallback: UDP socket + answer_request) ----
spawn ip netns exec "$ns_r" "$hb_resp" user --bind "$ip_r" --key-file "$key"
resp_pid=$last_pid
sleep 1
kill -0 "$resp_pid" || { echo "run.sh: user-space responder did not start" >&2; exit 1; }
probe user-idle
load_on
probe user-load
probe user-load-nort --rt-prio 0
probe user-loss --loss-seconds "$user_loss_s" --timeout-us "$timeout_us"
load_off
reap "$resp_pid"
fi

# ---- 3. FRR bfdd on the same veths ----
bfd_json="$out_dir/bfd.json"
if [ "$run_bfd" = 1 ]; then
    bfdd=/usr/lib/frr/bfdd
    [ -x "$bfdd" ] || { echo "run.sh: $bfdd missing (Debian package frr)" >&2; exit 2; }
    chmod 755 "$work"
    declare -A bfd_pid
    for side in p r; do
        d="$work/bfd-$side"
        mkdir -p "$d"
        chown frr:frr "$d"
        if [ $side = p ]; then me=$ip_p peer=$ip_r ns=$ns_p; else me=$ip_r peer=$ip_p ns=$ns_r; fi
        cat >"$d/bfdd.conf" <<EOF
log file $d/bfdd.log debugging
log timestamp precision 6
debug bfd peer
bfd
 peer $peer local-address $me
  detect-multiplier 3
  receive-interval 10
  transmit-interval 10
  no shutdown
 exit
exit
EOF
        # Standalone: no zebra (single-hop peers by address need none); private vty and control
        # sockets so nothing touches a system FRR. bfdd runs as frr (its vty group is frrvty).
        spawn ip netns exec "$ns" "$bfdd" -f "$d/bfdd.conf" -i "$d/bfdd.pid" --vty_socket "$d" \
            -z "$d/zserv.api" --bfdctl "$d/bfdd.sock" -u frr -g frr -P 0
        bfd_pid[$side]=$last_pid
    done
    vty() { vtysh --vty_socket "$work/bfd-$1" "${@:2}"; }
    # The bfdd PIDs as the kernel sees them (ip netns exec execs, so the spawn PID is bfdd).
    bfd_up() { [ "$(vty p -c 'show bfd peers json' 2>/dev/null | jq -r '.[0].status')" = up ]; }
    for _ in $(seq 100); do bfd_up && break; sleep 0.1; done
    bfd_up || { echo "run.sh: bfdd session did not come up" >&2; vty p -c 'show bfd peers'; exit 1; }
    # What is the smallest interval bfdd accepts? Try below 10 ms and record its answer.
    below=$(vty p -c 'conf t' -c 'bfd' -c "peer $ip_r local-address $ip_p" -c 'transmit-interval 1' 2>&1 | tr '\n' ' ' || true)
    say "bfdd: 'transmit-interval 1' -> ${below:-accepted}"
    timers=$(vty p -c 'show bfd peers json' | jq -c '.[0] | {"transmit-interval","receive-interval","detect-multiplier"}')
    say "bfdd: session up with $timers"

    # Detection time: SIGSTOP the responder-side bfdd (a bash builtin, so the stamp is exact),
    # read the prober-side bfdd's "up -> down" log line (microsecond stamps, same wall clock).
    log="$work/bfd-p/bfdd.log"
    det=()
    for trial in $(seq 10); do
        for _ in $(seq 100); do bfd_up && break; sleep 0.05; done
        sleep 0.$((RANDOM % 5 + 2))
        before=$(grep -c 'up -> down' "$log" || true)
        t0=$EPOCHREALTIME
        kill -STOP "${bfd_pid[r]}"
        for _ in $(seq 50); do
            [ "$(grep -c 'up -> down' "$log" || true)" -gt "$before" ] && break
            sleep 0.01
        done
        kill -CONT "${bfd_pid[r]}"
        line=$(grep 'up -> down' "$log" | sed -n "$((before + 1))p")
        [ -n "$line" ] || { say "bfdd trial $trial: no down within 0.5 s"; continue; }
        stamp=$(echo "$line" | awk '{print $1" "$2}' | tr / -)
        t1=$(date -d "$stamp" +%s.%6N)
        det+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1000 }')")
    done
    det_sorted=$(printf '%s\n' "${det[@]}" | sort -g)
    say "bfdd detection (ms, ${#det[@]} trials): $(echo "$det_sorted" | awk '{printf "%.1f ", $1}')"
    for _ in $(seq 100); do bfd_up && break; sleep 0.05; done

    downs() { vty "$1" -c 'show bfd peers counters json' | jq '.[0]["session-down"]'; }
    # False session downs under load: nice-0 bfdd, then both bfdd SCHED_FIFO.
    flap() {
        local label=$1 p0 r0
        p0=$(downs p)
        r0=$(downs r)
        load_on
        sleep "$bfd_flap_s"
        load_off
        sleep 0.2
        echo "{\"label\":\"$label\",\"seconds\":$bfd_flap_s,\"downs_prober_side\":$(($(downs p) - p0)),\"downs_responder_side\":$(($(downs r) - r0))}"
    }
    f1=$(flap bfdd-nice0-load)
    say "bfdd false downs, nice 0, stress-ng --cpu 2: $f1"
    for side in p r; do chrt -f -p 50 "${bfd_pid[$side]}" >/dev/null; done
    for _ in $(seq 100); do bfd_up && break; sleep 0.05; done
    f2=$(flap bfdd-fifo-load)
    say "bfdd false downs, SCHED_FIFO 50, stress-ng --cpu 2: $f2"
    printf '%s\n' "${det[@]}" | jq -s --argjson f1 "$f1" --argjson f2 "$f2" --argjson t "$timers" \
        --arg below "$below" \
        '{timers: $t, below_10ms: $below, detection_ms: ., flaps: [$f1, $f2]}' >"$bfd_json"
    for side in p r; do reap "${bfd_pid[$side]}"; done
fi

[ "$run_hb" = 1 ] || exit 0
# ---- summary: one table from the JSON files ----
summary="$out_dir/summary.md"
{
    echo "| case | responder | CPUs | prober | probes | lost | p50 us | p99 us | p99.9 us | max us | p99 median (MAD) over runs |"
    echo "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for c in xdp-idle xdp-load xdp-load-nort user-idle user-load user-load-nort; do
        jq -r --arg c "$c" '. as $d | .result as $r | [$c,
            (if ($c|startswith("xdp")) then "XDP native" else "user space" end),
            (if ($c|test("load")) then "stress-ng --cpu 2" else "idle" end),
            $d.environment.prober_sched,
            $r.pooled.sent, $r.pooled.lost,
            ($r.pooled.p50_us|.*10|round/10), ($r.pooled.p99_us|.*10|round/10),
            ($r.pooled.p99_9_us|.*10|round/10), ($r.pooled.max_us|.*10|round/10),
            "\($r.across_runs_us.p99.median|.*10|round/10) (\($r.across_runs_us.p99.mad|.*10|round/10))"]
            | "| " + (map(tostring) | join(" | ")) + " |"' "$out_dir/$c.json"
    done
    echo
    echo "| loss test (timeout ${timeout_us} us, stress-ng --cpu 2) | seconds | probes | false losses, wall clock | false losses, evidence | RTT p99.99 us | max us | prober max wake gap us |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for c in xdp-loss user-loss; do
        jq -r --arg c "$c" '.result as $r | [$c, $r.seconds, $r.rtt.sent, $r.false_losses_wall_clock,
            $r.false_losses_evidence, ($r.rtt.p99_99_us|round), ($r.rtt.max_us|round),
            ($r.prober_max_wake_gap_us|round)] | "| " + (map(tostring) | join(" | ")) + " |"' "$out_dir/$c.json"
    done
} >"$summary"
say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
tee -a "$txt" <"$summary"
say "results: $out_dir (JSON per case, results.txt, summary.md)"
