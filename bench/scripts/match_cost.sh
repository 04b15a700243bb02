#!/usr/bin/env bash
# What one x_tables rule and one match cost per packet on this kernel: a
# hand-run measurement behind BENCHMARKS.md's "what a match costs"
# (session 16). Needs root, ip, ipset, iptables-legacy and python3.
#
# One network namespace per case, each with 1,000 copies of one rule in
# filter OUTPUT that every packet walks (none of them decides), and one with
# none; a loopback UDP sender times 20,000 sends per namespace, the cases
# taken in turn in 7 rounds. Per rule = (case − empty) / 1,000, median of
# the rounds. Absolute figures drift with the machine; compare the cases.
set -euo pipefail
N=${N:-1000}
ROUNDS=${ROUNDS:-7}
declare -A CASE=(
  [a-bare]="-p udp"
  [b-comment]="-m comment --comment x"
  [c-conntrack]="-m conntrack --ctstate INVALID"
  [d-mark]="-m mark --mark 0x4000/0x4000"
  [e-statistic]="-m statistic --mode random --probability 0.0000000001"
  [f-set-net]="-m set --match-set Snet src"
  [g-set-ip]="-m set --match-set Sip src"
  [h-set-net+comment]="-m set ! --match-set Snet src -m comment --comment x"
)
cleanup() { for c in empty "${!CASE[@]}"; do ip netns del "mc-$c" 2>/dev/null || true; done; }
trap cleanup EXIT
setup() { # name rule
  local ns="mc-$1"
  ip netns add "$ns"; ip -n "$ns" link set lo up
  { echo "create Snet hash:net family inet"; echo "create Sip hash:ip family inet"
    for i in $(seq 1 120); do echo "add Snet 10.64.0.$i/32"; echo "add Sip 10.64.0.$i"; done; } \
    | ip netns exec "$ns" ipset restore
  { echo "*filter"; [ -n "$2" ] && for _ in $(seq 1 "$N"); do echo "-A OUTPUT $2"; done; echo COMMIT; } \
    | ip netns exec "$ns" iptables-legacy-restore
}
setup empty ""
for c in "${!CASE[@]}"; do setup "$c" "${CASE[$c]}"; done
probe() { ip netns exec "mc-$1" python3 - <<'PY'
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 9999)); r.setblocking(False)
t = time.perf_counter_ns()
for _ in range(20000):
    s.sendto(b"x", ("127.0.0.1", 9999))
    try: r.recv(8)
    except BlockingIOError: pass
print((time.perf_counter_ns() - t) / 20000)
PY
}
declare -A T
for _ in $(seq 1 "$ROUNDS"); do
  e=$(probe empty)
  for c in "${!CASE[@]}"; do T[$c]+="$(python3 -c "print(($(probe "$c") - $e) / $N)") "; done
done
for c in $(printf '%s\n' "${!CASE[@]}" | sort); do
  python3 -c "import statistics,sys; v=sorted(map(float,sys.argv[2:])); print('%-22s %6.1f ns per rule (rounds %s)' % (sys.argv[1], statistics.median(v), ' '.join('%.0f' % x for x in v)))" "${c#?-}" ${T[$c]}
done
