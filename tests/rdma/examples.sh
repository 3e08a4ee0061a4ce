#!/usr/bin/env bash
# examples/echo-server and echo-client, run as a user would: the example
# client against the example server (on the ephemeral port it reports) and
# against srdma-server; then the example server stops cleanly on SIGTERM.
# Environment (set by CTest): SRDMA_EXAMPLES (the built examples), and
# harness.sh's.
set -uo pipefail
. "$(dirname "$0")/harness.sh"
ex=${SRDMA_EXAMPLES:?SRDMA_EXAMPLES not set}

"$ex/echo-server" "$certs/server.pem" "$certs/server.key" >"$tmp/ex.log" 2>&1 &
ex_pid=$!
wait_for "$tmp/ex.log" '^listening on port [0-9]+$' 30 || fail "echo-server did not start: $(cat "$tmp/ex.log")"
ex_port=$(sed -nE 's/^listening on port ([0-9]+)$/\1/p' "$tmp/ex.log")
[ "$ex_port" != 0 ] || fail "port 0 was not replaced by the one bound"

out=$(timeout 60 "$ex/echo-client" "$certs/ca.pem" localhost "$ex_port" hello "a second message" 2>&1) ||
	fail "echo-client against echo-server: $out"
echo "$out"
grep -q '^echo: "hello"$' <<<"$out" && grep -q '^echo: "a second message"$' <<<"$out" ||
	fail "echoes missing: $out"
wait_for "$tmp/ex.log" '^client said bye' 30 || fail "echo-server did not see the BYE: $(cat "$tmp/ex.log")"

# A wrong CA: the example client refuses the server, exit 1.
timeout 60 "$ex/echo-client" "$certs/other-ca.pem" localhost "$ex_port" x >"$tmp/bad" 2>&1 && fail "a server the CA did not sign was accepted"
grep -q 'certificate verify failed' "$tmp/bad" || fail "no reason given: $(cat "$tmp/bad")"

# The same client against srdma-server: any srdma echo will do.
start_server
out=$(timeout 60 "$ex/echo-client" "$certs/ca.pem" localhost "$port" interop 2>&1) ||
	fail "echo-client against srdma-server: $out"
grep -q '^echo: "interop"$' <<<"$out" || fail "no echo from srdma-server: $out"
stop_server

kill -TERM "$ex_pid"
rc=0
wait "$ex_pid" || rc=$?
cat "$tmp/ex.log"
[ "$rc" = 0 ] && grep -q '^stopped$' "$tmp/ex.log" || fail "echo-server exited $rc after SIGTERM"
echo PASS
