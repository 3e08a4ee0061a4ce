#!/usr/bin/env bash
# End-to-end tests of srdma-server and srdma-client on an RDMA device.
# Usage: tools.sh CASE (see the case list at the bottom).
# Environment: see harness.sh.
set -uo pipefail
. "$(dirname "$0")/harness.sh"

case "${1:-}" in
echo-write)
	start_server
	out=$(printf 'send hello over rdma\nwrite bytes into the window\nauto 3\nstats\nquit\n' |
		client localhost)
	rc=$?
	echo "$out"
	[ "$rc" = 0 ] || fail "client exited $rc"
	grep -q '^connected to .*TLSv1.3.*PSNs verified' <<<"$out" || fail "no connected line"
	grep -q '^echo: hello over rdma (' <<<"$out" || fail "no echo"
	grep -q '^write: 21 bytes, server confirmed (SHA-256 match' <<<"$out" || fail "no confirmed write"
	grep -q '^auto: 3 rounds: 3/3 echoes ok, 3/3 writes ok' <<<"$out" || fail "auto rounds failed"
	grep -q '^stats: 4 echoes, 4 writes, 0 failures' <<<"$out" || fail "stats wrong"
	# IPv6, verified against the certificate's IP entry.
	out=$(printf 'send over ipv6\nquit\n' | client ::1)
	grep -q '^echo: over ipv6' <<<"$out" || fail "not served over IPv6: $out"
	# SIGUSR1: a stats line with the port's sequence counters.
	kill -USR1 "$srv_pid"
	wait_for "$tmp/server.log" 'stats \(SIGUSR1\): 0 clients, 2 connections so far .* counters: .*(duplicate_request|out_of_seq)' 30 ||
		fail "no stats line with counters after SIGUSR1"
	stop_server
	grep -q 'client 1: closed: client said bye (4 echoes, 4 writes' "$tmp/server.log" &&
		grep -q 'client 2: accepted from \[::1\]' "$tmp/server.log" ||
		fail "server did not log the client's session"
	# PSNs are secrets: not in the log at the default level.
	grep -qi 'psn local' "$tmp/server.log" && fail "PSNs logged without -v"
	cat "$tmp/server.log"
	;;
json)
	start_server
	out=$(printf 'send {"quoted"}\nwrite w\nbogus\nquit\n' | client --json 127.0.0.1)
	rc=$?
	echo "$out"
	[ "$rc" = 0 ] || fail "client exited $rc"
	grep -qE '^\{"event":"connected",.*"local_qpn":[0-9]+,"remote_qpn":[0-9]+,"tls":"TLSv1.3"' <<<"$out" ||
		fail "no connected event"
	# Secrets (PSNs, the rkey, the window's address) only with -v.
	grep -qE '_psn|rkey|window_addr' <<<"$out" && fail "secrets printed without -v: $out"
	vout=$(printf 'info\nquit\n' | client --json -v 127.0.0.1)
	echo "$vout"
	grep -qE '^\{"event":"connected",.*"local_psn":[0-9]+,"remote_psn":[0-9]+,"rkey":[0-9]+,"window_addr":[0-9]+,' <<<"$vout" ||
		fail "-v did not print the secrets"
	# The window is registered zero-based: the client is told offset 0,
	# not where the server's memory lies.
	grep -qE '"window_addr":0,' <<<"$vout" || fail "the server's window address was revealed"
	grep -qF '{"event":"echo","data":"{\"quoted\"}","rtt_us":' <<<"$out" || fail "no echo event"
	grep -qF '{"event":"write","bytes":1,"ok":true' <<<"$out" || fail "no write event"
	grep -qF '{"event":"error","step":"command","message":"unknown command' <<<"$out" ||
		fail "no error event for an unknown command"
	grep -qF '{"event":"closed","reason":"quit"}' <<<"$out" || fail "no closed event"
	stop_server
	;;
full)
	# 10 clients (the default cap) stay connected; the 11th is told
	# "server full"; then the 10 carry on.
	start_server
	for i in $(seq 10); do
		feeder "c$i"
		fd=c${i}_fd
		client --json localhost <"$tmp/c$i.in" >"$tmp/c$i.out" 2>&1 &
		echo $! >"$tmp/c$i.pid"
		echo "send client $i here" >&"${!fd}"
	done
	for i in $(seq 10); do
		wait_for "$tmp/c$i.out" '"event":"echo"' 60 || fail "client $i did not get its echo: $(cat "$tmp/c$i.out")"
	done
	out=$(echo "send should not happen" | client localhost 2>&1)
	rc=$?
	echo "11th client: exit $rc: $out"
	[ "$rc" != 0 ] || fail "the 11th client was served"
	grep -q 'server full' <<<"$out" || fail "the 11th client was not told 'server full'"
	for i in $(seq 10); do
		fd=c${i}_fd
		printf 'auto 3\nquit\n' >&"${!fd}"
	done
	for i in $(seq 10); do
		wait_for "$tmp/c$i.out" '"event":"closed"' 90 ||
			fail "client $i did not finish: $(cat "$tmp/c$i.out")"
		wait "$(cat "$tmp/c$i.pid")" || fail "client $i exited non-zero: $(cat "$tmp/c$i.out")"
		grep -q '"event":"auto","rounds":3,"echoes_ok":3,"writes_ok":3' "$tmp/c$i.out" ||
			fail "client $i did not finish its rounds after the refusal: $(cat "$tmp/c$i.out")"
	done
	grep -q 'refused a connection: server full' "$tmp/server.log" || fail "server did not log the refusal"
	stop_server
	echo "10 clients served, the 11th refused with 'server full'"
	;;
kill-client)
	# A client killed mid-session frees its slot: with room for one client
	# only, a new client still gets in.
	start_server --max-clients 1
	feeder k
	client --json localhost <"$tmp/k.in" >"$tmp/k.out" 2>&1 &

	echo "send before the kill" >&"$k_fd"
	wait_for "$tmp/k.out" '"event":"echo"' 60 || fail "first client did not get its echo"
	pkill -KILL -f "srdma-client --port $port" || fail "no client to kill"
	wait_for "$tmp/server.log" 'client 1: closed' 30 || fail "server did not notice the killed client"
	out=$(printf 'send after the kill\nquit\n' | client localhost)
	rc=$?
	echo "$out"
	[ "$rc" = 0 ] || fail "second client exited $rc"
	grep -q '^echo: after the kill' <<<"$out" || fail "second client was not served"
	grep -q 'client 2: closed: client said bye' "$tmp/server.log" || fail "second client's session not logged"
	stop_server
	cat "$tmp/server.log"
	;;
sigterm)
	# SIGTERM: every client is told (BYE) and sees "closed"; server exits 0.
	start_server
	for i in 1 2 3; do
		feeder "s$i"
		fd=s${i}_fd
		client --json localhost <"$tmp/s$i.in" >"$tmp/s$i.out" 2>&1 &
		echo "send hi" >&"${!fd}"
	done
	for i in 1 2 3; do
		wait_for "$tmp/s$i.out" '"event":"echo"' 60 || fail "client $i not served"
	done
	stop_server
	for i in 1 2 3; do
		wait_for "$tmp/s$i.out" '"event":"closed"' 30 || fail "client $i did not see the close"
		grep -qF '"event":"closed","reason":"server said bye"' "$tmp/s$i.out" ||
			fail "client $i: wrong close reason: $(cat "$tmp/s$i.out")"
	done
	grep -q 'signal Terminated: shutting down' "$tmp/server.log" || fail "no shutdown line"
	[ "$(grep -c 'closed: server shutting down' "$tmp/server.log")" = 3 ] ||
		fail "the server did not close all three clients"
	cat "$tmp/server.log"
	;;
psn-exporter)
	# --psn-mode exporter on both sides works; a mismatch either way is
	# refused with a clear reason.
	start_server --psn-mode exporter
	out=$(printf 'send derived\nquit\n' | client --json --psn-mode exporter localhost)
	echo "$out"
	grep -q '"psn_mode":"exporter"' <<<"$out" || fail "not connected in exporter mode"
	grep -qF '"data":"derived"' <<<"$out" || fail "no echo in exporter mode"
	out=$(echo quit | client localhost 2>&1)
	echo "exchange client, exporter server: $out"
	grep -q 'refused the connection: PSN mode mismatch' <<<"$out" || fail "mismatch not refused (client exchange)"
	grep -q 'setup failed at handshake: PSN mode mismatch: we use exporter, the peer exchange' "$tmp/server.log" ||
		fail "server did not log the mismatch"
	stop_server
	start_server
	out=$(echo quit | client --psn-mode exporter localhost 2>&1)
	echo "exporter client, exchange server: $out"
	grep -q 'refused the connection: PSN mode mismatch' <<<"$out" || fail "mismatch not refused (server exchange)"
	grep -q 'setup failed at handshake: PSN mode mismatch: we use exchange, the peer exporter' "$tmp/server.log" ||
		fail "server did not log the mismatch (server exchange)"
	stop_server
	;;
bench-smoke)
	# srdma-bench runs (a smoke test, not a measurement): lat at two sizes,
	# bw at one, then connect and scale against srdma-server.
	bench_pair() { # MODE ARGS...: server and client, client's JSON in $out
		local mode=$1
		shift
		"$bin/srdma-bench" "$mode" --port "$port" --dev "$dev" --cert "$certs/server.pem" \
			--key "$certs/server.key" "$@" >"$tmp/bs.out" 2>&1 &
		bs=$!
		wait_listen "$port" 30 || fail "bench server did not listen"
		out=$(timeout 120 "$bin/srdma-bench" "$mode" --port "$port" --dev "$dev" \
			--ca "$certs/ca.pem" "$@" --json localhost 2>&1)
		rc=$?
		wait "$bs" || fail "bench server failed: $(cat "$tmp/bs.out")"
		echo "$out"
		[ "$rc" = 0 ] || fail "bench $mode client exited $rc"
	}
	for size in 8 4096; do
		bench_pair lat -s "$size" -n 200
		grep -qE "^\{\"mode\":\"lat\",\"bytes\":$size,\"iters\":200,.*\"median_us\":[0-9.]+" <<<"$out" ||
			fail "no latency line for $size bytes"
	done
	# Inline sends (perftest's -I): a QP that takes them, sends that use it.
	bench_pair lat -s 8 -n 100 -I 64
	grep -qE '^\{"mode":"lat","bytes":8,"iters":100,"inline":true,' <<<"$out" ||
		fail "no inline latency line"
	bench_pair bw -s 65536 -n 50 -D 8
	grep -qE '^\{"mode":"bw","bytes":65536,"iters":50,"depth":8,"seal":"off","mib_per_s":[0-9.]+' <<<"$out" ||
		fail "no bandwidth line"
	# Sealed: every message sealed and opened on the way.
	bench_pair lat -s 8 -n 100 --seal
	grep -qE '^\{"mode":"lat","bytes":8,"iters":100,"inline":false,"seal":"aes-256-gcm","min_us"' <<<"$out" ||
		fail "no sealed latency line"
	bench_pair bw -s 4096 -n 100 --seal=chacha20-poly1305
	grep -qE '^\{"mode":"bw","bytes":4096,"iters":100,"depth":4,"seal":"chacha20-poly1305","mib_per_s":[0-9.]+' <<<"$out" ||
		fail "no sealed bandwidth line"

	start_server --max-clients 8
	out=$(timeout 300 "$bin/srdma-bench" connect --port "$port" --dev "$dev" --ca "$certs/ca.pem" \
		-n 4 -N 2 --json localhost 2>&1) || fail "bench connect failed: $out"
	echo "$out"
	[ "$(grep -c '"mode":"connect"' <<<"$out")" = 4 ] || fail "connect: not 4 rows"
	# Full handshakes resume nothing; with tickets every one resumes.
	grep -q '"resume":false,"parallel":1,"connections":4,"failed":0,"resumed":0,' <<<"$out" ||
		fail "connect: full row wrong"
	grep -q '"resume":true,"parallel":1,"connections":4,"failed":0,"resumed":4,' <<<"$out" ||
		fail "connect: the resumed row did not resume"
	out=$(timeout 300 "$bin/srdma-bench" scale --port "$port" --dev "$dev" --ca "$certs/ca.pem" \
		-n 8 -N 8 -t 60000 --server-pid "$srv_pid" --idle-secs 1 --rounds 2 --json localhost 2>&1) ||
		fail "bench scale failed: $out"
	echo "$out"
	# -N = -n: the storm mode, every client dialling at once.
	grep -qE '"clients":8,"parallel":8,"connected":8,"failed":0,.*"setup_max_ms":[0-9.]+,.*"echo_failed":0,' <<<"$out" ||
		fail "scale: not every client connected and echoed"
	stop_server
	# A server with resumption off: the same client resumes nothing.
	start_server --max-clients 8 --no-resumption
	out=$(timeout 300 "$bin/srdma-bench" connect --port "$port" --dev "$dev" --ca "$certs/ca.pem" \
		-n 2 -N 1 --json localhost 2>&1) || fail "bench connect failed: $out"
	grep -q '"resume":true,"parallel":1,"connections":2,"failed":0,"resumed":0,' <<<"$out" ||
		fail "connect: resumed against --no-resumption"
	stop_server

	"$bin/srdma-bench" lat >/dev/null 2>&1 && fail "bench without --cert/--key did not fail"
	"$bin/srdma-bench" connect >/dev/null 2>&1 && fail "bench connect without HOST did not fail"
	grep -q <<<"$("$bin/srdma-bench" --help)" 'ib_send_lat' || fail "bench --help"
	;;
qp-error)
	# A client whose QP goes to the error state (an RDMA WRITE with a
	# wrong rkey) loses its connection, though its TLS stays open; its slot
	# is freed (cap 1: the next client gets in).
	rogue=${SRDMA_ROGUE:?SRDMA_ROGUE not set}
	start_server --max-clients 1
	# Control: the same write with the real rkey and address succeeds.
	feeder ok
	"$rogue" --ca "$certs/ca.pem" --port "$port" --dev "$dev" localhost \
		<"$tmp/ok.in" >"$tmp/ok.out" 2>&1 {ok_fd}>&- &
	echo "write own own" >&"$ok_fd"
	wait_for "$tmp/ok.out" '^wc: ' 60 || fail "control write did not complete: $(cat "$tmp/ok.out")"
	grep -qx 'wc: success' "$tmp/ok.out" || fail "control write failed: $(cat "$tmp/ok.out")"
	exec {ok_fd}>&-
	wait_for "$tmp/server.log" 'client 1: closed' 30 || fail "control client did not close"
	feeder bad
	"$rogue" --ca "$certs/ca.pem" --port "$port" --dev "$dev" localhost \
		<"$tmp/bad.in" >"$tmp/bad.out" 2>&1 {bad_fd}>&- &
	echo "bad-rkey" >&"$bad_fd"
	wait_for "$tmp/bad.out" '^wc: ' 60 || fail "bad write did not complete: $(cat "$tmp/bad.out")"
	cat "$tmp/bad.out"
	# rxe completes it with the NAK's "remote access error", or, when the
	# server has already torn the connection down, as flushed by the error
	# state: either way it did not land.
	grep -qxE 'wc: (remote access error|Work Request Flushed Error)' "$tmp/bad.out" ||
		fail "a write with a wrong rkey did not fail"
	wait_for "$tmp/server.log" 'client 2: closed: QP error' 30 ||
		fail "the server did not tear down the client whose QP failed"
	out=$(printf 'send after the error\nquit\n' | client localhost)
	grep -q '^echo: after the error' <<<"$out" || fail "the slot was not freed: $out"
	stop_server
	cat "$tmp/server.log"
	;;
tls-refusals)
	start_server
	# Control: the right CA and name are accepted.
	echo quit | client localhost >/dev/null || fail "control: the right CA was refused"
	out=$(echo quit | timeout 60 "$bin/srdma-client" --port "$port" --dev "$dev" \
		--ca "$certs/other-ca.pem" localhost 2>&1)
	rc=$?
	echo "wrong CA: exit $rc: $out"
	[ "$rc" = 1 ] || fail "a client with the wrong CA was not refused"
	grep -q 'tls handshake failed: certificate verify failed' <<<"$out" || fail "wrong CA: unclear message"
	out=$(echo quit | client --server-name not-in-cert.example localhost 2>&1)
	rc=$?
	echo "wrong name: exit $rc: $out"
	[ "$rc" = 1 ] || fail "a name not in the certificate was accepted"
	grep -q 'certificate verify failed' <<<"$out" || fail "wrong name: unclear message"
	stop_server
	# Expired server certificate.
	"$bin/srdma-server" --port "$port" --dev "$dev" --cert "$certs/expired-server.pem" \
		--key "$certs/expired-server.key" >"$tmp/server.log" 2>&1 &
	srv_pid=$!
	wait_listen "$port" 30 || fail "expired-cert server did not listen"
	out=$(echo quit | client localhost 2>&1)
	rc=$?
	echo "expired: exit $rc: $out"
	[ "$rc" = 1 ] || fail "an expired server certificate was accepted"
	grep -q 'certificate has expired' <<<"$out" || fail "expired: unclear message"
	stop_server
	;;
mtls)
	start_server --client-ca "$certs/ca.pem"
	out=$(echo quit | client localhost 2>&1)
	rc=$?
	echo "no client cert: exit $rc: $out"
	[ "$rc" = 1 ] || fail "a client without a certificate was served"
	out=$(echo quit | client --cert "$certs/other-client.pem" --key "$certs/other-client.key" localhost 2>&1)
	rc=$?
	echo "other CA's client cert: exit $rc: $out"
	[ "$rc" = 1 ] || fail "a client certificate from another CA was accepted"
	# Control: the right client certificate is accepted.
	out=$(printf 'send mutual\nquit\n' | client --cert "$certs/client.pem" --key "$certs/client.key" localhost)
	rc=$?
	echo "$out"
	[ "$rc" = 0 ] || fail "control: the right client certificate was refused"
	grep -q '^echo: mutual' <<<"$out" || fail "control: not served"
	grep -q 'cert .*CN=srdma test client' "$tmp/server.log" || fail "server did not log the client's certificate"
	stop_server
	cat "$tmp/server.log"
	;;
deadline)
	# A peer that connects and never speaks TLS is dropped at the handshake
	# deadline; a real client is served meanwhile.
	start_server --handshake-timeout 2000 --max-clients 2
	exec {idle}<>/dev/tcp/127.0.0.1/"$port" || fail "cannot open the idle connection"
	out=$(printf 'send while one idles\nquit\n' | client localhost)
	rc=$?
	echo "$out"
	[ "$rc" = 0 ] || fail "the real client was not served while a connection idled"
	wait_for "$tmp/server.log" 'setup failed at tls handshake: no handshake within the deadline' 30 ||
		fail "the idle connection was not dropped at the deadline"
	# Dropped means closed: reading the idle socket gives EOF.
	timeout 10 cat <&"$idle" >/dev/null || fail "the idle connection is still open"
	exec {idle}<&-
	stop_server
	cat "$tmp/server.log"
	;;
shared)
	# Shared mode: one receive pool for every client; echo, write (through
	# the client's memory window), auto rounds, and two clients at once.
	start_server --srq 64
	out=$(printf 'send hello over rdma\nwrite bytes into the window\nauto 3\nstats\nquit\n' |
		client localhost)
	rc=$?
	echo "$out"
	[ "$rc" = 0 ] || fail "client exited $rc"
	grep -q '^echo: hello over rdma (' <<<"$out" || fail "no echo"
	grep -q '^write: 21 bytes, server confirmed (SHA-256 match' <<<"$out" || fail "no confirmed write"
	grep -q '^auto: 3 rounds: 3/3 echoes ok, 3/3 writes ok' <<<"$out" || fail "auto rounds failed"
	grep -q 'shared receive pool' "$tmp/server.log" || fail "server not in shared mode"
	feeder other
	client --json localhost <"$tmp/other.in" >"$tmp/other.out" 2>&1 {other_fd}>&- &
	echo "send first" >&"$other_fd"
	wait_for "$tmp/other.out" '"data":"first"' 60 || fail "the first client was not served"
	out=$(printf 'send beside it\nwrite beside\nquit\n' | client localhost)
	grep -q '^echo: beside it' <<<"$out" && grep -q '^write: 6 bytes, server confirmed' <<<"$out" ||
		fail "a second client beside the first was not served: $out"
	echo "send again" >&"$other_fd"
	wait_for "$tmp/other.out" '"data":"again"' 60 || fail "the first client stopped being served"
	# Clients that keep the pool's slots: one that leaves 4 answers
	# untaken (its first 16 land in its own receives) is closed after 5 s;
	# one that leaves more than 16 (SRDMA_SLOTS) is failed by the library
	# at once. The first client is served on.
	rogue h1
	echo "hoard 20" >&"$h1_fd"
	wait_for "$tmp/server.log" 'client 4: closed: answers not taken for 5 s' 60 ||
		fail "a client leaving its answers untaken was not closed"
	wait_for "$tmp/h1.out" '^hoard: the server closed' 30 || fail "the first hoarder was not told"
	rogue h2
	echo "hoard 40" >&"$h2_fd"
	wait_for "$tmp/server.log" 'client 5: closed: more than 16 messages unanswered' 60 ||
		fail "a client with more than 16 messages unanswered was not closed"
	echo "send after hoarders" >&"$other_fd"
	wait_for "$tmp/other.out" '"data":"after hoarders"' 60 || fail "the first client stopped being served"
	echo quit >&"$other_fd"
	stop_server
	cat "$tmp/server.log"
	;;
seal)
	# --seal: echo, write and auto sealed; the modes must match; a replayed
	# message ends the connection (the control: unsealed, it is echoed
	# twice).
	start_server --seal
	out=$(printf 'send hello sealed\nwrite bytes sealed\nauto 20\nstats\nquit\n' | client --seal localhost)
	rc=$?
	echo "$out"
	[ "$rc" = 0 ] || fail "client exited $rc"
	grep -q '^connected to .*peer bound, sealed with aes-256-gcm$' <<<"$out" || fail "not sealed"
	grep -q '^echo: hello sealed (' <<<"$out" || fail "no echo"
	grep -q '^write: 12 bytes, server confirmed (SHA-256 match' <<<"$out" || fail "no confirmed write"
	grep -q '^auto: 20 rounds: 20/20 echoes ok, 20/20 writes ok' <<<"$out" || fail "auto rounds failed"
	out=$(printf 'info\nquit\n' | client --json --seal=aes-256-gcm localhost)
	grep -q '"seal":"aes-256-gcm"' <<<"$out" || fail "no seal in the JSON: $out"
	# The largest message that fits a 4096-byte slot sealed: 4064 bytes.
	big=$(head -c 4064 /dev/zero | tr '\0' x)
	out=$(printf 'send %s\nsend %sx\nquit\n' "$big" "$big" | client --seal localhost 2>&1)
	grep -q "^echo: x\{4064\} (" <<<"$out" || fail "no echo of 4064 bytes"
	grep -q 'text longer than the buffer size' <<<"$out" || fail "4065 bytes not refused"
	# Modes that differ are refused, both ways, with the reason.
	out=$(echo quit | client localhost 2>&1) && fail "an unsealed client got in: $out"
	echo "unsealed client: $out"
	grep -q 'seal mode mismatch: the server seals with aes-256-gcm, the client does not seal' <<<"$out" ||
		fail "no seal mode reason: $out"
	out=$(echo quit | client --seal=chacha20-poly1305 localhost 2>&1) && fail "a chacha20 client got in"
	grep -q 'the client seals with chacha20-poly1305' <<<"$out" || fail "no cipher reason: $out"
	out=$(client --seal=rot13 localhost 2>&1)
	[ $? = 2 ] && grep -q "'rot13' is not aes-256-gcm" <<<"$out" || fail "a bad cipher name: $out"
	# A replay: refused, and the server says why.
	rogue r1 --seal
	echo "replay pay 100 to mallory" >&"$r1_fd"
	wait_for "$tmp/r1.out" '^replay: ' 60 || fail "no replay result"
	grep '^replay: ' "$tmp/r1.out"
	grep -q '^replay: 1 echoes; .*replayed' "$tmp/r1.out" || fail "the replay was not refused"
	wait_for "$tmp/server.log" 'closed: sealed message refused: sealed message number 0 where 1 was due \(replayed\)' 30 ||
		fail "the server did not log the refused replay"
	stop_server
	cat "$tmp/server.log"
	# Control: the same replay against a server that does not seal.
	start_server
	rogue r2
	echo "replay pay 100 to mallory" >&"$r2_fd"
	wait_for "$tmp/r2.out" '^replay: ' 60 || fail "no replay result (control)"
	grep '^replay: ' "$tmp/r2.out"
	grep -q '^replay: 2 echoes; connection open' "$tmp/r2.out" ||
		fail "control: unsealed, the replay was not taken twice"
	stop_server
	;;
rekey)
	# Rekeying under traffic: 20 rekeys asked by the client between auto
	# rounds (sealed), then rekeys the server starts every second in the
	# middle of a long auto run. No round may fail; every rekey brings new
	# QPNs.
	start_server --seal
	cmds=$(for i in $(seq 20); do printf 'auto 3\nrekey\n'; done; printf 'auto 3\nstats\nquit\n')
	out=$(client --seal --json localhost <<<"$cmds")
	rc=$?
	[ "$rc" = 0 ] || fail "client exited $rc: $out"
	n=$(grep -c '"event":"rekeyed"' <<<"$out")
	[ "$n" = 20 ] || fail "$n rekeys of 20: $out"
	grep '"event":"rekeyed"' <<<"$out" | head -3
	qpns=$(grep -o '"local_qpn":[0-9]*' <<<"$out" | sort -u | wc -l)
	[ "$qpns" -ge 21 ] || fail "only $qpns distinct client QPNs over 20 rekeys"
	[ "$(grep '"event":"rekeyed"' <<<"$out" | tail -1 | grep -o '"epoch":[0-9]*')" = '"epoch":20' ] ||
		fail "the last rekey is not epoch 20"
	bad=$(grep '"event":"auto"' <<<"$out" | grep -vc '"echoes_ok":3,"writes_ok":3,"failures":0')
	[ "$bad" = 0 ] || fail "$bad auto runs with failures: $out"
	grep -c '"event":"auto"' <<<"$out" | grep -qx 21 || fail "not 21 auto runs"
	wait_for "$tmp/server.log" 'client 1: rekeyed: .*seal keys \(epoch 20\)' 30 ||
		fail "the server did not log the 20th rekey"
	stop_server
	# The server's interval, in the middle of commands.
	start_server --rekey-interval 1
	out=$(printf 'auto 4000\nquit\n' | client --json localhost)
	rc=$?
	[ "$rc" = 0 ] || fail "client exited $rc: $(tail -5 <<<"$out")"
	grep '"event":"auto"' <<<"$out"
	grep -q '"event":"auto".*"echoes_ok":4000,"writes_ok":4000,"failures":0' <<<"$out" ||
		fail "rounds failed across the server's rekeys"
	stop_server
	n=$(grep -c 'client 1: rekeyed' "$tmp/server.log")
	echo "the server rekeyed the client $n times during auto 4000"
	[ "$n" -ge 2 ] || fail "the server's interval rekeyed $n times"
	grep 'rekeyed' "$tmp/server.log" | head -3
	# Not with shared mode: refused with the reason.
	out=$("$bin/srdma-server" --port "$port" --dev "$dev" --cert "$certs/server.pem" \
		--key "$certs/server.key" --srq 64 --rekey-interval 5 2>&1)
	[ $? = 1 ] && grep -q 'rekeying is not available in shared mode' <<<"$out" ||
		fail "--srq with --rekey-interval: $out"
	;;
alarm)
	# Injection detection: a PSN sweep (tests/rdma/inject: forged SENDs with
	# random PSNs through the far end of rxe0's link, at an idle client's
	# QP) raises the alarm within seconds and every client is rekeyed, with
	# no real message lost; thousands of echoes raise none.
	[ "${RXE_VM_NETDEV:-}" = veth0 ] || { echo "skipped: needs tests/vm/rxe-vm's veth pair"; exit 77; }
	start_server
	out=$(printf 'auto 1500\nquit\n' | client --json localhost)
	grep -q '"event":"auto".*"echoes_ok":1500,"writes_ok":1500,"failures":0' <<<"$out" ||
		fail "normal traffic failed: $(tail -3 <<<"$out")"
	# Let the watch look at least twice after the traffic.
	end=$((SECONDS + 3))
	while [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
	grep -q 'ALARM' "$tmp/server.log" && fail "3,000 messages of normal traffic raised an alarm"
	echo "normal traffic: 1,500 echoes and 1,500 writes, no alarm"
	feeder v
	client_bg v --json localhost
	echo "send before the sweep" >&"$v_fd"
	wait_for "$tmp/v.out" '"data":"before the sweep"' 60 || fail "the idle client was not served"
	qpn=$(sed -n 's/.*client 2: QP up on [^:]*: QPN \(0x[0-9a-f]*\) <->.*/\1/p' "$tmp/server.log")
	[ -n "$qpn" ] || fail "no QPN for client 2 in the log"
	t0=$SECONDS
	"${SRDMA_INJECT:?SRDMA_INJECT not set}" "$qpn" 20000 || fail "the injector failed"
	wait_for "$tmp/server.log" 'ALARM: packet injection suspected' 30 || fail "no alarm after the sweep"
	echo "alarm $((SECONDS - t0)) s after the sweep began"
	grep -E 'ALARM|"event":"alarm"' "$tmp/server.log"
	grep -q '"event":"alarm".*"action":"rekey","clients":1' "$tmp/server.log" || fail "no JSON alarm event"
	wait_for "$tmp/server.log" 'client 2: rekeyed' 30 || fail "the client was not rekeyed"
	echo "send after the alarm" >&"$v_fd"
	wait_for "$tmp/v.out" '"data":"after the alarm"' 60 || fail "the client lost its connection"
	kill -USR1 "$srv_pid"
	wait_for "$tmp/server.log" 'stats \(SIGUSR1\).*; 1 injection alarms' 30 || fail "no alarm count in the stats"
	exec {v_fd}>&-
	stop_server
	;;
valgrind|valgrind-shared)
	# The server's connect/disconnect path under valgrind: no errors, no
	# definite, indirect or possible leaks, after two sessions and a
	# SIGTERM. (contrib/valgrind/libibverbs.supp names the one block
	# libibverbs keeps for the process's life: its device list.)
	# valgrind-shared: the same in shared mode (--srq).
	command -v valgrind >/dev/null || fail "valgrind not installed (scripts/setup installs it)"
	mode=()
	[ "$1" = valgrind-shared ] && mode=(--srq 16)
	valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
		--suppressions="$(dirname "$0")/../../contrib/valgrind/libibverbs.supp" \
		--show-leak-kinds=definite,indirect,possible --error-exitcode=3 --log-file="$tmp/vg.log" \
		"$bin/srdma-server" --port "$port" --dev "$dev" --cert "$certs/server.pem" \
		--key "$certs/server.key" --handshake-timeout 60000 "${mode[@]}" >"$tmp/server.log" 2>&1 &
	srv_pid=$!
	wait_listen "$port" 120 || fail "server under valgrind did not listen"
	for i in 1 2; do
		out=$(printf 'send under valgrind\nwrite w\nquit\n' | client --timeout 60000 localhost)
		grep -q '^write: 1 bytes, server confirmed' <<<"$out" || fail "session $i failed: $out"
	done
	stop_server
	sed -n '/HEAP SUMMARY/,$p' "$tmp/vg.log"
	grep -q 'ERROR SUMMARY: 0 errors' "$tmp/vg.log" || fail "valgrind reported errors: $(cat "$tmp/vg.log")"
	grep -q 'no leaks are possible' "$tmp/vg.log" ||
		{ grep -q 'definitely lost: 0 bytes' "$tmp/vg.log" && grep -q 'possibly lost: 0 bytes' "$tmp/vg.log"; } ||
		fail "valgrind: leaks"
	;;
qpn)
	# Unpredictable QPNs: with the prepared QPs' spread (the default), the
	# server's QPN steps from one connection to the next by amounts an
	# observer cannot tell in advance. Control: --qpn-spread 0, where rxe
	# counts up and the step is (nearly) always the same.
	qpn_steps() { # SERVER_ARGS...: distinct steps over 60 sequential connections
		start_server "$@"
		"$bin/srdma-bench" connect --dev "$dev" --port "$port" --ca "$certs/ca.pem" -n 60 \
			--json localhost >"$tmp/connect.json" 2>&1 || fail "srdma-bench connect: $(cat "$tmp/connect.json")"
		stop_server
		grep '"resume":false' "$tmp/connect.json" | sed -n 's/.*"qpn_steps_distinct":\([0-9]*\).*/\1/p'
	}
	spread=$(qpn_steps)
	none=$(qpn_steps --qpn-spread 0)
	echo "distinct QPN steps over 59: $spread with the default spread, $none with --qpn-spread 0"
	[ -n "$spread" ] && [ -n "$none" ] || fail "no qpn_steps_distinct in srdma-bench's output"
	[ "$none" -le 3 ] || fail "control: without the spread, $none distinct steps (rxe should count up)"
	[ "$spread" -ge 25 ] || fail "with the spread, only $spread distinct steps of 59"
	;;
escapes)
	# Bytes a peer sends reach logs and terminals escaped, on both sides:
	# a client's escape sequences (a title change, a screen clear) in the
	# server's -v log, the server's echo of them on the client's terminal.
	start_server -v
	esc=$'\e]0;pwned\a\e[2J'
	out=$(printf 'send %s\nwrite %s\nquit\n' "$esc" "$esc" | client localhost)
	printf '%s\n' "$out" | cat -v
	grep -q 'closed: quit' <<<"$out" || fail "the client did not finish"
	# Control: the bytes went through (they arrive, escaped, on each side).
	grep -qF 'echo: \x1b]0;pwned\x07\x1b[2J' <<<"$out" || fail "no escaped echo on the client"
	wait_for "$tmp/server.log" 'RDMA write of 14 bytes: "\\x1b\]0;pwned\\x07\\x1b\[2J"' 30 ||
		fail "the server did not log the write, escaped"
	stop_server
	# The attack: not one raw escape byte on either side.
	LC_ALL=C grep -q $'\e' <<<"$out" && fail "raw escape bytes reached the client's terminal"
	LC_ALL=C grep -q $'\e' "$tmp/server.log" && fail "raw escape bytes reached the server's log"
	LC_ALL=C grep -q $'\a' "$tmp/server.log" && fail "a raw BEL reached the server's log"
	cat -v "$tmp/server.log"
	;;
fairness)
	# One turn per client per loop: several clients in tight ping-pong
	# share the server evenly, and it still serves a new client and a
	# signal at once, even beside a client that never lets its CQ run dry
	# (15 SENDs always in flight). 71f92e8 served a client until its CQ
	# was empty: that client kept the loop; SIGTERM waited more than 10 s.
	start_server
	rogue hog
	echo "pipeline 15 30" >&"$hog_fd"
	sleep 1
	for i in 1 2 3; do
		feeder "b$i"
		fd=b${i}_fd
		client --json localhost <"$tmp/b$i.in" >"$tmp/b$i.out" 2>&1 &
		echo "auto 1000000" >&"${!fd}"
	done
	for i in 1 2 3; do
		wait_for "$tmp/b$i.out" '"event":"connected"' 60 || fail "client $i did not connect"
	done
	sleep 2
	# A new client is served while the three hammer the server.
	t0=$SECONDS
	out=$(printf 'send new one\nquit\n' | client --timeout 10000 localhost 2>&1)
	echo "new client served in $((SECONDS - t0)) s: $out"
	grep -q '^echo: new one' <<<"$out" || fail "a new client was not served under load"
	sleep 2
	t_kill=$EPOCHREALTIME
	kill -TERM "$srv_pid"
	wait_for "$tmp/server.log" 'signal Terminated: shutting down' 20 || fail "SIGTERM not handled"
	# The log's wall-clock time of the shutdown line, against the kill.
	printf -v day '%(%Y-%m-%d)T' -1
	hms=$(grep -m1 'signal Terminated' "$tmp/server.log" | cut -d' ' -f1)
	handled=$(date -d "$day $hms" +%s.%N)
	delay_ms=$(awk -v a="$t_kill" -v b="$handled" 'BEGIN { d = (b - a) * 1000; if (d < -43200000) d += 86400000; printf "%d", d }')
	echo "SIGTERM handled $delay_ms ms after it was sent"
	[ "$delay_ms" -le 1000 ] || fail "SIGTERM waited $delay_ms ms"
	wait "$srv_pid"
	srv_pid=
	for i in 1 2 3; do
		wait_for "$tmp/b$i.out" '"event":"auto"' 30 || fail "client $i did not stop"
	done
	ok=()
	for i in 1 2 3; do
		ok+=("$(sed -nE 's/.*"event":"auto".*"echoes_ok":([0-9]+).*/\1/p' "$tmp/b$i.out")")
	done
	wait_for "$tmp/hog.out" '^pipeline: ' 60 || fail "the pipelining client did not finish"
	echo "echo rounds per client: ${ok[*]}; beside them, $(grep '^pipeline: ' "$tmp/hog.out")"
	min=$(printf '%s\n' "${ok[@]}" | sort -n | head -n 1)
	max=$(printf '%s\n' "${ok[@]}" | sort -n | tail -n 1)
	[ "$min" -gt 0 ] && [ "$max" -le $((2 * min)) ] ||
		fail "unfair shares: ${ok[*]} (the most more than twice the least)"
	;;
liveness)
	# A client that hangs (SIGSTOP), idle or in the middle of its
	# rounds, is noticed by the liveness probe and its slot freed;
	# a live idle client is not. And the client side: a hung server is
	# noticed by the client. (71f92e8: a stopped client kept its slot
	# until the server restarted.)
	start_server --peer-timeout 3000 --max-clients 3
	# (started directly, not through client(): $! must be the client
	# itself for the signals to reach it)
	# One after the other, so that the server numbers them 1, 2, 3.
	feeder live
	client_bg live --json --peer-timeout 3000 localhost
	wait_for "$tmp/live.out" '"event":"connected"' 60 || fail "live client not connected"
	feeder idle
	client_bg idle --json localhost
	idle_pid=$!
	wait_for "$tmp/idle.out" '"event":"connected"' 60 || fail "idle client not connected"
	feeder busy
	client_bg busy --json localhost
	busy_pid=$!
	wait_for "$tmp/busy.out" '"event":"connected"' 60 || fail "busy client not connected"
	echo "auto 1000000" >&"$busy_fd"
	sleep 1
	kill -STOP "$idle_pid" "$busy_pid"
	t0=$SECONDS
	wait_for "$tmp/server.log" 'client 2: closed: the peer is not responding' 20 ||
		fail "a stopped idle client kept its slot"
	wait_for "$tmp/server.log" 'client 3: closed: the peer is not responding' 20 ||
		fail "a client stopped mid-session kept its slot"
	echo "both stopped clients dropped within $((SECONDS - t0)) s (peer timeout 3 s)"
	# The slots are free: two new clients get in beside the live one.
	for i in 1 2; do
		out=$(printf 'send after the hang\nquit\n' | client localhost)
		grep -q '^echo: after the hang' <<<"$out" || fail "no slot after the hang: $out"
	done
	kill -KILL "$idle_pid" "$busy_pid"
	# Control: the live idle client answered every probe all along.
	sleep 4
	grep -q 'client 1: closed' "$tmp/server.log" && fail "a live idle client was dropped"
	echo "send still here" >&"$live_fd"
	wait_for "$tmp/live.out" '"data":"still here"' 30 || fail "the live client lost its connection"
	# The client's side: a stopped server is declared dead by its client.
	kill -STOP "$srv_pid"
	t0=$SECONDS
	wait_for "$tmp/live.out" '"event":"closed","reason":"server not responding"' 30 ||
		fail "the client did not notice the hung server: $(cat "$tmp/live.out")"
	echo "the client gave up on the stopped server after $((SECONDS - t0)) s"
	kill -CONT "$srv_pid"
	stop_server
	cat "$tmp/server.log"
	;;
server-killed)
	# A client in the middle of its rounds whose server dies notices at
	# once on the control channel, not after each command's own timeout
	# (here a minute; 71f92e8 waited it out, command after command).
	start_server
	feeder k
	client --json --op-timeout 60000 localhost <"$tmp/k.in" >"$tmp/k.out" 2>&1 {k_fd}>&- &
	cpid=$!
	wait_for "$tmp/k.out" '"event":"connected"' 60 || fail "not connected"
	echo "auto 1000000" >&"$k_fd"
	sleep 2
	kill -KILL "$srv_pid"
	t0=$SECONDS
	srv_pid=
	wait "$cpid"
	rc=$?
	echo "client exit $rc after $((SECONDS - t0)) s:"
	tail -n 3 "$tmp/k.out"
	[ "$rc" = 1 ] || fail "the client exited $rc"
	[ $((SECONDS - t0)) -le 15 ] || fail "the client waited out its command timeout"
	grep -q '"event":"closed","reason":"connection lost"' "$tmp/k.out" || fail "no 'connection lost'"
	# Reported: the rounds run before the loss, of the million asked.
	grep -qE '"event":"auto","rounds":[1-9][0-9]*,"echoes_ok":[0-9]+,.*"asked":1000000,' "$tmp/k.out" ||
		fail "the rounds were not reported"
	;;
dead-host)
	# A client host that vanishes without a word (its link cut: no FIN, no
	# RST, nothing answers) is declared dead by the server within the
	# peer timeout, and the client, cut off too, gives up on the server.
	# The client lives in a network namespace joined by a veth pair.
	command -v ip >/dev/null && [ "$(id -u)" = 0 ] || { echo "SKIP: needs root and ip"; exit 77; }
	ns=srdma-far-$$
	ip netns add "$ns" || { echo "SKIP: no network namespaces"; exit 77; }
	trap 'ip netns del "$ns" 2>/dev/null; ip link del srdfar0 2>/dev/null; cleanup' EXIT
	ip link add srdfar0 type veth peer name srdfar1 || fail "veth"
	ip link set srdfar1 netns "$ns"
	ip addr add 10.78.0.1/24 dev srdfar0
	ip link set srdfar0 up
	ip -n "$ns" addr add 10.78.0.2/24 dev srdfar1
	ip -n "$ns" link set srdfar1 up
	ip -n "$ns" link set lo up
	start_server --peer-timeout 3000
	feeder far
	ip netns exec "$ns" timeout 120 "$bin/srdma-client" --port "$port" --dev "$dev" \
		--ca "$certs/ca.pem" --server-name localhost --peer-timeout 3000 --json 10.78.0.1 \
		<"$tmp/far.in" >"$tmp/far.out" 2>&1 {far_fd}>&- &
	wait_for "$tmp/far.out" '"event":"connected"' 60 || fail "far client not connected: $(cat "$tmp/far.out")"
	echo "send across" >&"$far_fd"
	wait_for "$tmp/far.out" '"data":"across"' 30 || fail "no echo across"
	# Control: idle and reachable, it stays through three probe periods.
	sleep 4
	grep -q 'client 1: closed' "$tmp/server.log" && fail "a reachable idle client was dropped"
	ip -n "$ns" link set srdfar1 down
	t0=$SECONDS
	wait_for "$tmp/server.log" 'client 1: closed: (the peer is not responding|connection lost)' 30 ||
		fail "the server kept a dead host's connection"
	echo "server dropped the dead host after $((SECONDS - t0)) s"
	wait_for "$tmp/far.out" '"event":"closed","reason":"(server not responding|connection lost)"' 30 ||
		fail "the cut-off client did not give up: $(cat "$tmp/far.out")"
	stop_server
	cat "$tmp/server.log"
	;;
reconnect)
	# The server is killed (SIGKILL: no BYE) and started again under a
	# client doing auto rounds with --reconnect: the client reconnects
	# (new QP, new PSNs) and carries on; every
	# operation is either ok or reported failed, and none is done twice:
	# the new server served exactly what the client counted after the
	# reconnect. Control: without --reconnect the same kill ends the client.
	start_server
	feeder rc
	client_bg rc --json --reconnect=60 localhost
	echo "auto 300" >&"$rc_fd"
	wait_for "$tmp/rc.out" '"event":"echo"' 60 || fail "no rounds: $(cat "$tmp/rc.out")"
	kill -9 "$srv_pid"
	wait "$srv_pid" 2>/dev/null
	start_server
	wait_for "$tmp/rc.out" '"event":"reconnected"' 60 || fail "no reconnect: $(cat "$tmp/rc.out")"
	wait_for "$tmp/rc.out" '"event":"auto"' 180 || fail "auto did not finish: $(cat "$tmp/rc.out")"
	echo "auto 20" >&"$rc_fd"
	echo "quit" >&"$rc_fd"
	wait_for "$tmp/rc.out" '"event":"closed"' 120 || fail "client did not quit: $(cat "$tmp/rc.out")"
	grep -E '"event":"(reconnect|auto|closed|error)' "$tmp/rc.out"
	# (A restarted server cannot resume the old session: its ticket key
	# lived only in the killed process.)
	# Every round accounted for: ok or failed, two operations a round.
	while read -r line; do
		r=$(sed -E 's/.*"rounds":([0-9]+).*/\1/' <<<"$line")
		e=$(sed -E 's/.*"echoes_ok":([0-9]+).*/\1/' <<<"$line")
		w=$(sed -E 's/.*"writes_ok":([0-9]+).*/\1/' <<<"$line")
		f=$(sed -E 's/.*"failures":([0-9]+).*/\1/' <<<"$line")
		[ $((e + w + f)) = $((2 * r)) ] || fail "auto: $e + $w ok + $f failed != 2 x $r rounds"
	done < <(grep '"event":"auto"' "$tmp/rc.out")
	# Nothing done twice: what the new server served is what the client
	# saw succeed after the reconnect.
	after=$(sed -n '/"event":"reconnected"/,$p' "$tmp/rc.out")
	e2=$(grep -c '"event":"echo"' <<<"$after")
	w2=$(grep -c '"event":"write","bytes":[0-9]*,"ok":true' <<<"$after")
	stop_server
	grep -q "client 1: closed: client said bye ($e2 echoes, $w2 writes" "$tmp/server.log" ||
		fail "the new server served other than the client's $e2 echoes, $w2 writes: $(grep closed "$tmp/server.log")"
	eval "exec ${rc_fd}>&-"
	# Control: the same kill without --reconnect ends the session.
	start_server
	feeder nr
	client_bg nr --json localhost
	echo "auto 300" >&"$nr_fd"
	wait_for "$tmp/nr.out" '"event":"echo"' 60 || fail "control: no rounds"
	kill -9 "$srv_pid"
	wait "$srv_pid" 2>/dev/null
	srv_pid=
	wait_for "$tmp/nr.out" '"event":"closed"' 60 || fail "control: the client did not end"
	grep -q '"event":"reconnect' "$tmp/nr.out" && fail "control: reconnected without --reconnect"
	;;
crl)
	# --crl on both tools: a revoked certificate is refused with the
	# reason; the same setup lets a good one through (the control).
	start_server --client-ca "$certs/ca.pem" --crl "$certs/crl.pem"
	out=$(printf 'send good\nquit\n' | client --cert "$certs/client.pem" --key "$certs/client.key" \
		--crl "$certs/crl.pem" localhost 2>&1)
	grep -q '^echo: good' <<<"$out" || fail "control: a good client certificate was refused: $out"
	out=$(echo quit | client --cert "$certs/revoked-client.pem" --key "$certs/revoked-client.key" \
		localhost 2>&1)
	echo "revoked client: $out"
	wait_for "$tmp/server.log" 'setup failed at tls handshake: certificate verify failed: certificate revoked' 30 ||
		fail "a revoked client certificate was accepted"
	stop_server
	"$bin/srdma-server" --port "$port" --dev "$dev" --cert "$certs/revoked-server.pem" \
		--key "$certs/revoked-server.key" >"$tmp/server.log" 2>&1 &
	srv_pid=$!
	wait_listen "$port" 30 || fail "server did not listen"
	out=$(echo quit | client localhost 2>&1)
	grep -q '^connected' <<<"$out" || fail "control: without --crl the revoked certificate is otherwise fine: $out"
	out=$(echo quit | client --crl "$certs/crl.pem" localhost 2>&1)
	rc=$?
	echo "revoked server: exit $rc: $out"
	[ "$rc" = 1 ] && grep -q 'tls handshake failed: certificate verify failed: certificate revoked' <<<"$out" ||
		fail "a revoked server certificate was accepted"
	stop_server
	;;
usage)
	# Bad input: clear messages, exit 2, no crash.
	"$bin/srdma-server" --cert x >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 2 ] && grep -q -- '--cert and --key are required' "$tmp/o" || fail "server without --key: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-server" --cert x --key y --port 70000 >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 2 ] && grep -q -- "--port: '70000' is not a number in 1..65535" "$tmp/o" || fail "bad port: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-server" --cert /nonexistent.pem --key y --port "$port" >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 1 ] && grep -q 'load certificate failed: /nonexistent.pem' "$tmp/o" || fail "missing cert file: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-server" --cert "$certs/server.pem" --key "$certs/server.key" --dev nosuchdev0 --port "$port" >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 1 ] && grep -q "open RDMA device failed: no RDMA device named 'nosuchdev0'" "$tmp/o" || fail "bad device: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-client" localhost >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 2 ] && grep -q -- '--ca is required' "$tmp/o" || fail "client without --ca: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-client" --ca "$certs/ca.pem" >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 2 ] && grep -q 'no HOST given' "$tmp/o" || fail "client without host: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-client" --ca "$certs/ca.pem" --port "$port" --dev "$dev" localhost </dev/null >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 1 ] && grep -q 'connect failed: localhost port [0-9]*: Connection refused' "$tmp/o" || fail "no server: exit $rc: $(cat "$tmp/o")"
	# A GID index an address vector cannot hold is refused, not cut.
	"$bin/srdma-server" --cert x --key y --gid-index 256 >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 2 ] && grep -q -- "--gid-index: '256' is not a number in 0..255" "$tmp/o" || fail "gid 256: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-client" --ca x --gid-index 300 localhost >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 2 ] && grep -q -- "--gid-index: '300' is not a number in 0..255" "$tmp/o" || fail "client gid 300: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-server" --cert "$certs/server.pem" --key "$certs/server.key" --crl "$certs/crl.pem" \
		--port "$port" --dev "$dev" >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 1 ] && grep -q 'options failed: a CRL checks client certificates: it needs a client CA too' "$tmp/o" ||
		fail "--crl without --client-ca: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-client" --ca "$certs/ca.pem" --crl "$certs/ca.pem" --port "$port" --dev "$dev" localhost </dev/null >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 1 ] && grep -q 'load CRL failed: .*ca.pem' "$tmp/o" || fail "a CRL file without a CRL: exit $rc: $(cat "$tmp/o")"
	"$bin/srdma-client" --ca x --peer-timeout 100 localhost >"$tmp/o" 2>&1; rc=$?
	[ "$rc" = 2 ] && grep -q -- "--peer-timeout: 100 ms is too short" "$tmp/o" || fail "peer timeout 100: exit $rc: $(cat "$tmp/o")"
	# The whole text, not a pipe: a grep -q that exits at its match can
	# SIGPIPE a help longer than one stdio buffer, which pipefail reports.
	grep -q <<<"$("$bin/srdma-server" --help)" -- '--max-clients N' || fail "server --help"
	grep -q <<<"$("$bin/srdma-client" --help)" 'auto \[N\]' || fail "client --help"
	grep -q <<<"$("$bin/srdma-client" --help)" -- '--reconnect\[=SECONDS\]' || fail "client --help: no --reconnect"
	# One letter, one meaning across the three programs (as their --help
	# lists them). -s is bytes per message in all three (srdma-bench calls
	# it --size: the message; the others --buf-size: the slot that holds one).
	for t in srdma-server srdma-client srdma-bench; do
		"$bin/$t" --help | sed -nE 's/^  -([A-Za-z]), --([a-z-]+).*/\1 \2/p'
	done | sort -u >"$tmp/letters"
	clash=$(grep -v '^s ' "$tmp/letters" | cut -d' ' -f1 | uniq -d)
	[ -z "$clash" ] || fail "short options with two meanings: $(grep -E "^($(echo $clash | tr ' ' '|')) " "$tmp/letters" | tr '\n' ';')"
	[ "$(wc -l <"$tmp/letters")" -gt 25 ] || fail "too few options parsed from --help: $(cat "$tmp/letters")"
	echo "usage errors reported"
	;;
*)
	echo "usage: $0 echo-write|json|full|kill-client|sigterm|tls-refusals|mtls|psn-exporter|bench-smoke|qp-error|deadline|valgrind|valgrind-shared|shared|escapes|fairness|liveness|server-killed|dead-host|crl|reconnect|usage" >&2
	exit 2
	;;
esac
echo PASS
