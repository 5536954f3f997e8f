#!/bin/bash
# TAP ports by hand: two hosts in namespaces, iperf3 with 1 and 4 TCP streams, through
# (1) the kernel bridge with veth ports, (2) vswitch with TAP ports moved into the hosts,
# (3) vswitch with relayed TAPs (tap:NAME@NS), (4) Open vSwitch's userspace datapath (netdev)
# with TAP ports; the four interleaved, ROUNDS rounds of SECS s.
#
#   sudo scripts/tap-compare.sh [ROUNDS] [SECS]          # defaults 3 and 5
#
# Needs root, a release build (cargo build --release -p vswitch), iperf3 and Open vSwitch
# (openvswitch-switch; no kernel module). The `e2e` benchmark measures vswitch against the
# bridge with more care (paired ratios, CPU); this adds Open vSwitch beside them.
set -u
ROUNDS=${1:-3}
SECS=${2:-5}
V=${VSWITCH:-$(dirname "$0")/../target/release/vswitch}
T="tc$$"

iperf() { # NS_CLIENT NS_SERVER ADDR PORT STREAMS -> Gbit/s
  ip netns exec "$2" iperf3 -s -D -1 -p "$4"
  sleep 0.5
  ip netns exec "$1" iperf3 -c "$3" -p "$4" -t "$SECS" -P "$5" -J |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))'
}

bridge() { # STREAMS
  ip link add "${T}br" type bridge && ip link set "${T}br" up
  for i in 1 2; do
    ip netns add "${T}b$i"
    ip link add "${T}v$i" type veth peer name eth0 netns "${T}b$i"
    ip link set "${T}v$i" master "${T}br" up
    ip -n "${T}b$i" addr add 10.79.0.$i/24 dev eth0
    ip -n "${T}b$i" link set eth0 up
  done
  iperf "${T}b1" "${T}b2" 10.79.0.2 5601 "$1"
  ip link del "${T}br"; ip netns del "${T}b1"; ip netns del "${T}b2"
}

taps_into() { # PREFIX NET: move TAPs PREFIX1, PREFIX2 into new namespaces PREFIX1, PREFIX2
  for i in 1 2; do
    ip netns add "$1$i"
    ip link set "$1$i" netns "$1$i"
    ip -n "$1$i" addr add "$2.$i/24" dev "$1$i"
    ip -n "$1$i" link set "$1$i" up
  done
}

vswitch() { # STREAMS
  "$V" --ports "${T}s1,${T}s2" --name "$T" >/dev/null 2>&1 &
  local sw=$!
  sleep 1.5
  taps_into "${T}s" 10.77.0
  iperf "${T}s1" "${T}s2" 10.77.0.2 5301 "$1"
  kill "$sw"; wait "$sw" 2>/dev/null
  ip netns del "${T}s1"; ip netns del "${T}s2"
}

relayed() { # STREAMS
  ip netns add "${T}r1"; ip netns add "${T}r2"
  "$V" --ports "tap:${T}r1@${T}r1,tap:${T}r2@${T}r2" --name "$T" >/dev/null 2>&1 &
  local sw=$!
  sleep 1.5
  for i in 1 2; do ip -n "${T}r$i" addr add "10.76.0.$i/24" dev "${T}r$i"; done
  iperf "${T}r1" "${T}r2" 10.76.0.2 5201 "$1"
  kill "$sw"; wait "$sw" 2>/dev/null
  ip netns del "${T}r1"; ip netns del "${T}r2"
}

ovs() { # STREAMS
  local d; d=$(mktemp -d /tmp/vswitch-ovs.XXXXXX)
  (
    export OVS_RUNDIR=$d OVS_LOGDIR=$d OVS_DBDIR=$d OVS_SYSCONFDIR=$d
    fresh=$(ip link show ovs-netdev >/dev/null 2>&1 || echo yes)
    ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" --pidfile="$d/db.pid" --detach --log-file="$d/db.log"
    vs="ovs-vsctl --db=unix:$d/db.sock"
    $vs --no-wait init
    $vs --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
    ovs-vswitchd "unix:$d/db.sock" --pidfile="$d/vswitchd.pid" --detach --log-file="$d/vswitchd.log"
    $vs add-br "${T}o" -- set bridge "${T}o" datapath_type=netdev
    for i in 1 2; do
      ip tuntap add mode tap "${T}o$i"
      $vs add-port "${T}o" "${T}o$i" -- set interface "${T}o$i" type=tap
    done
    sleep 1
    taps_into "${T}o" 10.78.0
    iperf "${T}o1" "${T}o2" 10.78.0.2 5501 "$1"
    $vs del-br "${T}o"
    kill "$(cat "$d/vswitchd.pid")" "$(cat "$d/db.pid")"
    sleep 0.5
    # The netdev datapath's own device, if this run made it.
    [ -n "$fresh" ] && ip link del ovs-netdev
    ip netns del "${T}o1"; ip netns del "${T}o2"
  ) 2>/dev/null
  rm -rf "$d"
}

declare -A got
for r in $(seq "$ROUNDS"); do
  for streams in 1 4; do
    for c in $(printf '%s\n' bridge vswitch relayed ovs | shuf); do
      got[$c,$streams]+="$($c "$streams") "
    done
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "| TCP streams | kernel bridge (veth) | vswitch (TAP) | vswitch (relayed TAP) | Open vSwitch userspace (TAP) |"
echo "|---|---|---|---|---|"
for streams in 1 4; do
  b=$(echo "${got[bridge,$streams]}" | median)
  s=$(echo "${got[vswitch,$streams]}" | median)
  r=$(echo "${got[relayed,$streams]}" | median)
  o=$(echo "${got[ovs,$streams]}" | median)
  echo "| $streams | $b Gbit/s | $s ($(python3 -c "print(round($s/$b,2))")×) | $r ($(python3 -c "print(round($r/$b,2))")×) | $o ($(python3 -c "print(round($o/$b,2))")×) |"
done
echo "rounds: $ROUNDS of $SECS s; per round: ${got[*]}" >&2
