# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts that source this
# Shared by deploy/netns/up and deploy/netns/down: the layout of the one-machine "datacenter"
# (hosts, namespaces, addresses, ports) and the state directory that records what `up` started.
# Sourced, not run.

# Every host is a network namespace `sluice-<host>` with one veth into the bridge; the host side
# of the bridge has NETWORK.1, so the machine itself is a client too.
netns_dir=${SLUICE_NETNS_DIR:-/tmp/sluice-netns}
netns_network=${SLUICE_NETNS_NETWORK:-10.77.0}
netns_bridge=sluice-br0
netns_prefix=sluice-

# host -> last octet of its address. Order matters: `up` starts them in this order and `down`
# stops them in the reverse one.
declare -A host_octet=(
  [consul-1]=11 [consul-2]=12 [consul-3]=13
  [sc-1]=21 [sc-2]=22
  [spu-1]=31 [spu-2]=32 [spu-3]=33
  [client]=100
)
consul_hosts=(consul-1 consul-2 consul-3)
sc_hosts=(sc-1 sc-2)
spu_hosts=(spu-1 spu-2 spu-3)
all_hosts=("${consul_hosts[@]}" "${sc_hosts[@]}" "${spu_hosts[@]}" client)

consul_http_port=8500
sc_public_port=9003
sc_private_port=9004
sc_metrics_port=9008
netns_cluster=default
spu_public_port=9005
spu_private_port=9006
spu_metrics_port=9007
spu_first_id=5001

host_address() { echo "$netns_network.${host_octet[$1]}"; }
host_namespace() { echo "$netns_prefix$1"; }
# The host-side veth: interface names have at most 15 characters.
host_veth() { echo "sl-$1"; }
host_dir() { echo "$netns_dir/$1"; }

log() { echo "netns: $*" >&2; }
die() {
  echo "netns: error: $*" >&2
  exit 1
}

namespace_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }

# The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), so that a
# recorded pid that was reused by another process is not mistaken for ours.
process_start_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # Fields after the command name, which is in parentheses and may contain spaces.
  stat=${stat##*) }
  # shellcheck disable=SC2086 # split into fields on purpose
  set -- $stat
  echo "${20}"
}

# Whether the process recorded in HOST_DIR/pid (pid and start time) still runs.
recorded_process_alive() {
  local pid_file=$1/pid pid ticks
  [[ -f $pid_file ]] || return 1
  read -r pid ticks <"$pid_file" || return 1
  [[ -n $pid && -n $ticks ]] || return 1
  [[ $(process_start_ticks "$pid" 2>/dev/null) == "$ticks" ]]
}

recorded_pid() {
  local pid _
  read -r pid _ <"$1/pid"
  echo "$pid"
}
