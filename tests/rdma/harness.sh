# Shared set-up for the shell tests that drive srdma-server and its clients
# (tools.sh, security.sh): sourced, not run.
# Environment (set by CTest): SRDMA_BIN (the built programs),
# SRDMA_TEST_CERTS, SRDMA_ROGUE (tests/rdma/rogue-client).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bin=${SRDMA_BIN:?SRDMA_BIN not set}
certs=${SRDMA_TEST_CERTS:?SRDMA_TEST_CERTS not set}
dev=$(rdma_device) || exit 1
tmp=$(mktemp -d)
srv_pid=
lo_mtu=
cleanup() {
	[ -n "$lo_mtu" ] && ip link set lo mtu "$lo_mtu"
	[ -n "$srv_pid" ] && kill -9 "$srv_pid" 2>/dev/null
	jobs -p | xargs -r kill -9 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	if [ -s "$tmp/server.log" ]; then
		echo "--- server log" >&2
		cat "$tmp/server.log" >&2
	fi
	exit 1
}

port=$(free_tcp_port)

# start_server [ARGS...]: srdma-server on $port, log in $tmp/server.log.
start_server() {
	"$bin/srdma-server" --port "$port" --dev "$dev" --cert "$certs/server.pem" \
		--key "$certs/server.key" "$@" >"$tmp/server.log" 2>&1 &
	srv_pid=$!
	wait_listen "$port" 30 || fail "server did not listen on port $port"
}

# stop_server: SIGTERM, and the server must exit 0.
stop_server() {
	local rc=0
	kill -TERM "$srv_pid"
	wait "$srv_pid" || rc=$?
	srv_pid=
	[ "$rc" = 0 ] || fail "server exited $rc after SIGTERM"
}

client() { # ARGS... (commands on stdin)
	timeout 120 "$bin/srdma-client" --port "$port" --dev "$dev" --ca "$certs/ca.pem" "$@"
}

# small_loopback_mtu: loopback at Ethernet's 1500 bytes (as root; restored
# at exit). With lo's 64 KiB MTU the kernel grows a socket's send buffer to
# megabytes, so a peer that stops reading takes minutes to back it up; at
# 1500 it takes seconds, as on a real network.
small_loopback_mtu() {
	[ "$(id -u)" = 0 ] && command -v ip >/dev/null || return 0
	lo_mtu=$(cat /sys/class/net/lo/mtu)
	ip link set lo mtu 1500 || lo_mtu=
}

# client_bg NAME ARGS...: srdma-client in the background, itself ($! is
# its pid), reading the feeder NAME's FIFO, output in $tmp/NAME.out.
client_bg() {
	local name=$1 fdvar=${1}_fd
	shift
	(
		eval "exec ${!fdvar}>&-"
		exec "$bin/srdma-client" --port "$port" --dev "$dev" --ca "$certs/ca.pem" "$@"
	) <"$tmp/$name.in" >"$tmp/$name.out" 2>&1 &
}

# feeder NAME: a FIFO $tmp/NAME.in held open on a new fd whose number goes
# to NAME_fd; write commands to it, and a client reading it gets EOF (quits)
# when this script exits or closes the fd. No stray "sleep" keeps CTest's
# pipes open. A reader that must see EOF before the script ends is started
# with {NAME_fd}>&- so it does not hold a write end itself.
feeder() {
	local f=$tmp/$1.in fd
	mkfifo "$f"
	exec {fd}<>"$f"
	printf -v "$1_fd" '%s' "$fd"
}

# wait_for FILE PATTERN [SECONDS]: until FILE has a line matching PATTERN.
# (Wall-clock seconds: under TCG each grep/sleep fork costs ~0.3 s, so a
# count of tries would wait several times longer than asked.)
wait_for() {
	local end=$((SECONDS + ${3:-30}))
	while [ "$SECONDS" -lt "$end" ]; do
		grep -qE "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	grep -qE "$2" "$1" 2>/dev/null
}


# rogue NAME [ARGS...]: start tests/rdma/rogue-client (with ARGS) fed by
# feeder NAME, output in $tmp/NAME.out; waits for its JSON line and sets
# NAME_rkey and NAME_addr.
rogue() {
	local name=$1 fdvar=${1}_fd line
	shift
	feeder "$name"
	# (in a subshell that first closes our write end of its own FIFO)
	(
		eval "exec ${!fdvar}>&-"
		exec "${SRDMA_ROGUE:?SRDMA_ROGUE not set}" --ca "$certs/ca.pem" --port "$port" \
			--dev "$dev" "$@" localhost
	) <"$tmp/$name.in" >"$tmp/$name.out" 2>&1 &
	wait_for "$tmp/$name.out" '^\{"qpn"' 60 || fail "rogue client $name did not connect: $(cat "$tmp/$name.out")"
	line=$(grep -m 1 '^{"qpn"' "$tmp/$name.out")
	printf -v "${name}_rkey" '%s' "$(sed -E 's/.*"rkey":([0-9]+).*/\1/' <<<"$line")"
	printf -v "${name}_addr" '%s' "$(sed -E 's/.*"addr":([0-9]+).*/\1/' <<<"$line")"
}

# rogue_do NAME COMMAND: send a command, wait for and print its "wc:" line.
rogue_do() {
	local fdvar=${1}_fd n
	n=$(grep -c '^wc: ' "$tmp/$1.out")
	echo "$2" >&"${!fdvar}"
	for _ in $(seq 300); do
		[ "$(grep -c '^wc: ' "$tmp/$1.out")" -gt "$n" ] && break
		sleep 0.1
	done
	grep '^wc: ' "$tmp/$1.out" | tail -n 1
}

# rogue_end NAME: close its stdin; it says BYE and exits.
rogue_end() {
	local fdvar=${1}_fd
	eval "exec ${!fdvar}>&-"
}
