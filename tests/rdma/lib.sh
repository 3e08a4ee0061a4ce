# Helpers for the shell tests in tests/rdma (sourced, not run).

# The RDMA device to use: $SRDMA_DEVICE, else the first one the kernel has.
rdma_device() {
	if [ -n "${SRDMA_DEVICE:-}" ]; then
		echo "$SRDMA_DEVICE"
		return
	fi
	local d
	for d in /sys/class/infiniband/*; do
		[ -e "$d" ] && { basename "$d"; return; }
	done
	echo "no RDMA device (set SRDMA_DEVICE or run under tests/vm/rxe-vm)" >&2
	return 1
}

# GID index to use on DEV port PORT: a RoCE v2 GID holding an IPv4 address,
# else any RoCE v2 GID, else 0 (InfiniBand: the LID routes, GID 0 is fine).
gid_index() {
	local dev=$1 port=${2:-1} dir t g i best=
	dir=/sys/class/infiniband/$dev/ports/$port
	# Builtins only (read, not cat): the table has many entries and every
	# fork counts under emulation.
	for t in "$dir"/gid_attrs/types/*; do
		read -r g <"$t" 2>/dev/null || continue
		[ "$g" = "RoCE v2" ] || continue
		i=${t##*/}
		read -r g <"$dir/gids/$i" 2>/dev/null || continue
		[ "$g" = 0000:0000:0000:0000:0000:0000:0000:0000 ] && continue
		case "$g" in
		0000:0000:0000:0000:0000:ffff:*) echo "$i"; return ;;
		esac
		[ -n "$best" ] || best=$i
	done
	echo "${best:-0}"
}

# A TCP port nobody listens on, from the kernel's ephemeral range choices.
free_tcp_port() {
	local p
	for _ in $(seq 20); do
		p=$((20000 + RANDOM % 30000))
		grep -qi ":$(printf '%04X' "$p") " /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return; }
	done
	return 1
}

# Wait up to $2 seconds (default 10) until something listens on TCP port $1.
wait_listen() {
	local hex end=$((SECONDS + ${2:-10}))
	hex=$(printf '%04X' "$1")
	while :; do
		grep -qiE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}
