#!/bin/bash
# Interop by hand: a host behind vswitch's VXLAN port reaches a host behind Open vSwitch's
# userspace datapath (netdev, native tunnelling), VNI 42, port 4789, over a veth underlay
# between two namespaces; TCP crosses both ways and each side learns the other's MAC.
#
#   sudo scripts/ovs-interop.sh [switch|kernel]     # the VXLAN port's carrier (default switch)
#
# Needs root, a release build (cargo build --release -p vswitch), Open vSwitch
# (openvswitch-switch: ovsdb-server, ovs-vswitchd; no kernel module), iperf3 and python3.
# Two settings OVS's userspace datapath needs on a veth underlay, whoever the sender is (Linux's
# own vxlan likewise): complete UDP checksums from the sender (a veth hands over partial ones,
# which OVS counts as `datapath_drop_tunnel_pop_error`), so the sending side's transmit
# checksum offload goes off (ETHTOOL_STXCSUM); and OVS's userspace TSO off (OVS 3.1 cannot
# tunnel TSO packets: `netdev_push_header_drops`). Not part of `cargo test`: the tests need
# nothing but Rust, root and iproute2.
set -eu
CARRIER=${1:-switch}
V=${VSWITCH:-$(dirname "$0")/../target/release/vswitch}
D=$(mktemp -d /tmp/vswitch-ovs.XXXXXX)
export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D
NS="ovi$$"
cleanup() {
  for p in ovs-vswitchd ovsdb-server; do [ -f "$D/$p.pid" ] && kill "$(cat "$D/$p.pid")" 2>/dev/null || true; done
  [ -n "${SW:-}" ] && kill "$SW" 2>/dev/null && wait "$SW" 2>/dev/null || true
  for n in u k h; do ip netns del "$NS$n" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
for n in u k h; do ip netns add "$NS$n"; ip -n "$NS$n" link set lo up; done
ip link add u0 netns "${NS}u" type veth peer name u1 netns "${NS}k"
ip -n "${NS}u" addr add 10.95.7.1/24 dev u0
ip -n "${NS}u" link set u0 up
ip -n "${NS}k" link set u1 up
ip netns exec "${NS}u" python3 - u0 <<'PY'
import ctypes, fcntl, socket, struct, sys
class Value(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]
v = Value(0x17, 0)  # ETHTOOL_STXCSUM, off
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(v)) + b"\0" * 16
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fcntl.ioctl(s.fileno(), 0x8946, ifr)  # SIOCETHTOOL
PY
ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
K="ip netns exec ${NS}k"
$K ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --pidfile="$D/ovsdb-server.pid" --detach --log-file="$D/ovsdb.log"
VS="$K ovs-vsctl --db=unix:$D/db.sock"
$VS --no-wait init
$VS --no-wait set Open_vSwitch . other_config:userspace-tso-enable=false
$K ovs-vswitchd "unix:$D/db.sock" --pidfile="$D/ovs-vswitchd.pid" --detach --log-file="$D/vswitchd.log"
$VS add-br br-phy -- set bridge br-phy datapath_type=netdev
$VS add-port br-phy u1
ip -n "${NS}k" addr add 10.95.7.2/24 dev br-phy
ip -n "${NS}k" link set br-phy up
$VS add-br br-int -- set bridge br-int datapath_type=netdev
$VS add-port br-int vx0 -- set interface vx0 type=vxlan options:remote_ip=10.95.7.1 \
  options:local_ip=10.95.7.2 options:key=42 options:dst_port=4789
ip -n "${NS}k" addr add 10.96.7.2/24 dev br-int
ip -n "${NS}k" link set br-int mtu 1450 up
ip -n "${NS}u" link add hp type veth peer name eth0 netns "${NS}h"
ip -n "${NS}u" link set hp mtu 1450 up
ip -n "${NS}h" addr add 10.96.7.1/24 dev eth0
ip -n "${NS}h" link set eth0 mtu 1450 up
ip netns exec "${NS}u" "$V" --ports dev:hp --name "$NS" \
  --vxlan "vx7:vni=42,local=10.95.7.1,remote=10.95.7.2,carrier=$CARRIER" >"$D/vswitch.log" 2>&1 &
SW=$!
sleep 2
ok=0
$K iperf3 -s -D -1 -p 5401 && sleep 0.3
ip netns exec "${NS}h" timeout 20 iperf3 -c 10.96.7.2 -p 5401 -n 16M | grep -q receiver || ok=1
ip netns exec "${NS}h" iperf3 -s -D -1 -p 5402 && sleep 0.3
$K timeout 20 iperf3 -c 10.96.7.1 -p 5402 -n 16M | grep -q receiver || ok=1
echo "vswitch's table:"; ip netns exec "${NS}u" "$V" fdb show --name "$NS"
echo "Open vSwitch's table:"; $K ovs-appctl -t "$D/ovs-vswitchd.$(cat "$D/ovs-vswitchd.pid").ctl" fdb/show br-int
if [ $ok = 0 ]; then echo "interop OK (carrier=$CARRIER): 16 MiB of TCP each way"; else echo "interop FAILED"; fi
exit $ok
