#!/bin/bash
# Minimal pod paths for the datapath investigation of issue #19 (docs/benchmarks.md, "Where
# pod↔pod loses against node↔node"): five sets of two "nodes" joined by a veth pair with one
# "pod" each — br (node bridge, the `bridge` plugin's shape), brnat (+ the agent's NAT table),
# brnat0 (+ bridge-nf-call-iptables=0), l3 (no bridge: /32 route, the `ptp` plugin's shape),
# l3nat (+ the NAT table) — then R rounds of one node↔node and one pod↔pod iperf3 run per set,
# interleaved. Prints TSV: set, path, round, Gbit/s. Needs root; everything lives in
# namespaces named dpx-*, removed on exit (also on failure and Ctrl-C).
# Usage: flock /tmp/causeway-bench.lock e2e/scripts/minimal-paths.sh [R] [seconds]
set -euo pipefail
R=${1:-10}
T=${2:-2}
SETS="br brnat brnat0 l3 l3nat"

down() {
  for n in $(ip netns list | awk '/^dpx-/{print $1}'); do ip netns del "$n"; done
}
trap down EXIT

nat_table() { # the agent's outgoing-NAT table for pod subnet $1 (node-agent/src/nat)
  cat <<NFT
table ip causeway {
  set no-masquerade { type ipv4_addr; flags interval; elements = { 10.77.0.0/16 } }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $1 ip daddr != @no-masquerade masquerade
  }
}
NFT
}

up_set() {
  local s=$1 a=dpx-$1-a b=dpx-$1-b i=1
  ip netns add "$a"
  ip netns add "$b"
  ip link add u0 netns "$a" type veth peer name u0 netns "$b"
  for n in "$a" "$b"; do
    ip -n "$n" link set lo up
    ip -n "$n" link set u0 up
    ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
  done
  ip -n "$a" addr add 192.168.77.1/24 dev u0
  ip -n "$b" addr add 192.168.77.2/24 dev u0
  ip -n "$a" route add 10.77.2.0/24 via 192.168.77.2
  ip -n "$b" route add 10.77.1.0/24 via 192.168.77.1
  for n in "$a" "$b"; do
    local p=dpx-$s-p$i
    ip netns add "$p"
    ip -n "$p" link set lo up
    ip link add v0 netns "$n" type veth peer name eth0 netns "$p"
    ip -n "$p" addr add "10.77.$i.2/24" dev eth0
    ip -n "$p" link set eth0 up
    ip -n "$n" link set v0 up
    case $s in
      br*)
        ip -n "$n" link add br0 type bridge
        ip -n "$n" link set br0 up
        ip -n "$n" link set v0 master br0
        ip -n "$n" addr add "10.77.$i.1/24" dev br0 ;;
      l3*)
        ip -n "$n" addr add "10.77.$i.1/32" dev v0
        ip -n "$n" route add "10.77.$i.2/32" dev v0 ;;
    esac
    ip -n "$p" route add default via "10.77.$i.1"
    case $s in *nat*) nat_table "10.77.$i.0/24" | ip netns exec "$n" nft -f - ;; esac
    if [ "$s" = brnat0 ]; then
      ip netns exec "$n" sysctl -qw net.bridge.bridge-nf-call-iptables=0
    fi
    i=$((i + 1))
  done
  ip netns exec "dpx-$s-p1" ping -c 1 -W 2 10.77.2.2 >/dev/null
}

one() { # server namespace, server address, client namespace, client address
  ip netns exec "$1" iperf3 -s -1 -B "$2" -A 1 >/dev/null 2>&1 &
  local server=$!
  sleep 0.3
  ip netns exec "$3" iperf3 -c "$2" -B "$4" -t "$T" -O 1 -A 0 -J |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)'
  wait "$server"
}

down
for s in $SETS; do up_set "$s"; done
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1 /proc/loadavg), $R rounds of $T s"
for r in $(seq 1 "$R"); do
  for s in $SETS; do
    printf '%s\tnode\t%s\t%s\n' "$s" "$r" "$(one "dpx-$s-b" 192.168.77.2 "dpx-$s-a" 192.168.77.1)"
    printf '%s\tpod\t%s\t%s\n' "$s" "$r" "$(one "dpx-$s-p2" 10.77.2.2 "dpx-$s-p1" 10.77.1.2)"
  done
done
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1 /proc/loadavg)"
