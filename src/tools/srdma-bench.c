/*
 * srdma-bench: benchmarks over secure srdma connections, with perftest-like
 * conventions.
 *
 *   lat      SEND/RECV ping-pong latency per size (both sides run srdma-bench)
 *   bw       RDMA WRITE bandwidth and message rate (both sides run srdma-bench)
 *   connect  connection setup rate and latency by phase (against srdma-server)
 *   scale    many clients on one srdma-server: memory, idle CPU, echo rate
 *
 * lat and bw busy-poll their CQs, as perftest does; connect and scale use
 * only the library's public API.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <srdma.h>
#include "common.h"
#include "bench.h"

const char *prog = "srdma-bench";

static void usage(FILE *f)
{
	fprintf(f,
"Usage: srdma-bench lat|bw [OPTIONS] [HOST]\n"
"       srdma-bench connect|scale [OPTIONS] HOST\n"
"\n"
"Benchmarks over secure srdma connections (TLS bootstrap, random PSNs,\n"
"verified RC QP), with perftest's conventions. For lat and bw, run the same\n"
"command on the server without HOST, then on the client with HOST. connect\n"
"and scale are clients of a running srdma-server.\n"
"\n"
"Modes:\n"
"  lat      SEND/RECV ping-pong latency per size: min, median, p99, p99.9 of\n"
"           the round trip halved (as ib_send_lat)\n"
"  bw       RDMA WRITE bandwidth (MiB/s, as ib_write_bw's MB/sec) and message\n"
"           rate into the server's window, --depth writes in flight\n"
"  connect  -n secure connections made and closed one at a time, then -N at\n"
"           a time, each with full TLS handshakes and with TLS 1.3 session\n"
"           resumption: rate per second and p50/p99 setup time by phase\n"
"           (TCP, TLS, parameter exchange, QP creation, state transitions,\n"
"           binding check). The server needs --max-clients >= -N.\n"
"  scale    connect -n clients (-N at a time) and keep them: p50/p99/max\n"
"           setup time as each client saw it, the server's\n"
"           memory per connection and CPU while all are idle (needs\n"
"           --server-pid on the same machine), then --rounds echo rounds on\n"
"           all of them; reports failures. The server needs --max-clients\n"
"           >= -n.\n"
"\n"
"Options:\n"
"  -p, --port PORT        TLS port (default 4433)\n"
"  -d, --dev NAME         RDMA device (default: the first)\n"
"  -g, --gid-index N      GID index, 0..255 (default: automatic; -x also works,\n"
"                         as in perftest)\n"
"  -s, --size BYTES       message size, 1..1048576 (default 8; bw 65536)\n"
"  -A, --all              lat, bw: every power of two from 2 to 1048576\n"
"  -n, --iters N          lat: round trips (default 1000); bw: writes per\n"
"                         size (default 5000); connect: connections per row\n"
"                         (default 200); scale: clients (default 100)\n"
"  -D, --depth N          bw: writes in flight, 1..%u (default 128)\n"
"  -I, --inline-size N    lat, bw: QPs that take N bytes inline, and sends\n"
"                         of up to N bytes inline, as perftest's -I (default\n"
"                         0: none; give both sides the same)\n"
"  -N, --parallel N       connect, scale: connections made at once, 1..1024\n"
"                         (default 8); scale -N equal to -n is a storm: all\n"
"                         clients dial at once (raise -t to match)\n"
"  -t, --timeout MS       connect, scale: each setup's deadline, queueing at\n"
"                         a busy server included, 100..600000 (default 10000)\n"
"      --server-pid PID   scale: the srdma-server to measure (same machine)\n"
"      --idle-secs S      scale: how long to measure idle CPU (default 5)\n"
"      --rounds N         scale: echo rounds over all clients (default 20)\n"
"  -c, --cert FILE        server certificate (lat/bw server side)\n"
"  -k, --key FILE         server key (lat/bw server side)\n"
"  -a, --ca FILE          CA to verify the server (client side)\n"
"  -j, --json             one JSON object per result row\n"
"  -E, --seal[=CIPHER]    seal every message (give both sides the same;\n"
"                         connect, scale: the server's --seal): lat seals\n"
"                         and opens each message on both sides; bw seals\n"
"                         each write into one of 4 window slots, and the\n"
"                         server opens each and returns its slot (a SEND),\n"
"                         so every byte is sealed and checked. -s stays the\n"
"                         message's size; 32 bytes more cross the link\n"
"  -h, --help             show this help\n"
"\n"
"Short options mean the same in srdma-server, srdma-client and srdma-bench.\n"
"\n"
"Exit status: 0 on success, 1 when a connection or transfer fails (scale:\n"
"when any client failed), 2 on bad usage.\n", SRDMA_MAX_SEND_DEPTH);
}

void die_oom(void)
{
	fprintf(stderr, "%s: out of memory\n", prog);
	exit(1);
}

int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double pct(const double *t, size_t n, double p)
{
	return n ? t[(size_t)((double)(n - 1) * p)] : 0;
}

/* --- options --- */

static int parse(int argc, char **argv, struct opts *o)
{
	enum { OPT_PID = 256, OPT_IDLE, OPT_ROUNDS };
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "dev", required_argument, NULL, 'd' },
		{ "gid-index", required_argument, NULL, 'g' },
		{ "size", required_argument, NULL, 's' },
		{ "all", no_argument, NULL, 'A' },
		{ "iters", required_argument, NULL, 'n' },
		{ "depth", required_argument, NULL, 'D' },
		{ "inline-size", required_argument, NULL, 'I' },
		{ "parallel", required_argument, NULL, 'N' },
		{ "timeout", required_argument, NULL, 't' },
		{ "server-pid", required_argument, NULL, OPT_PID },
		{ "idle-secs", required_argument, NULL, OPT_IDLE },
		{ "rounds", required_argument, NULL, OPT_ROUNDS },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "ca", required_argument, NULL, 'a' },
		{ "json", no_argument, NULL, 'j' },
		{ "seal", optional_argument, NULL, 'E' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static const char *const names[] = { "lat", "bw", "connect", "scale" };
	struct tool_opts t;
	bool has_size = false;
	int ch;

	tool_opts_init(&t, prog);
	/* -x: perftest's letter for the GID index, kept as another name for -g. */
	while ((ch = getopt_long(argc, argv, "p:d:g:x:s:An:D:I:N:t:c:k:a:E::jh", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (!parse_ulong(prog, "--size", optarg, 1, 1ul << 20, &o->size))
				return 2;
			has_size = true;
			break;
		case 'A': o->all = true; break;
		case 'n':
			if (!parse_ulong(prog, "--iters", optarg, 1, 10000000, &o->iters))
				return 2;
			o->has_iters = true;
			break;
		case 'D':
			if (!parse_ulong(prog, "--depth", optarg, 1, SRDMA_MAX_SEND_DEPTH, &o->depth))
				return 2;
			break;
		case 'I':
			if (!parse_ulong(prog, "--inline-size", optarg, 0, SRDMA_MAX_INLINE, &inline_max))
				return 2;
			break;
		case 'N':
			if (!parse_ulong(prog, "--parallel", optarg, 1, 1024, &o->parallel))
				return 2;
			break;
		case OPT_PID:
			if (!parse_ulong(prog, "--server-pid", optarg, 1, 1ul << 22, &o->server_pid))
				return 2;
			break;
		case OPT_IDLE:
			if (!parse_ulong(prog, "--idle-secs", optarg, 1, 3600, &o->idle_s))
				return 2;
			break;
		case OPT_ROUNDS:
			if (!parse_ulong(prog, "--rounds", optarg, 0, 1000000, &o->rounds))
				return 2;
			break;
		case 'h': usage(stdout); exit(0);
		default:
			if (!tool_opt_or_usage(&t, ch == 'x' ? 'g' : ch, optarg))
				return 2;
		}
	}
	if (t.port)
		o->port = t.port;
	o->dev = t.rdma.dev_name;
	o->has_gid = t.rdma.gid_index >= 0;
	o->gid = o->has_gid ? (unsigned long)t.rdma.gid_index : 0;
	o->cert = t.cert;
	o->key = t.key;
	o->ca = t.ca;
	o->json = t.json;
	o->handshake_ms = t.handshake_ms;
	o->seal = t.seal;
	if (optind >= argc) {
		fprintf(stderr, "%s: no mode given (lat, bw, connect, scale)\nTry '%s --help'.\n",
			prog, prog);
		return 2;
	}
	for (o->mode = LAT; o->mode <= SCALE; o->mode++)
		if (strcmp(argv[optind], names[o->mode]) == 0)
			break;
	if (o->mode > SCALE) {
		fprintf(stderr, "%s: unknown mode '%s' (lat, bw, connect, scale)\nTry '%s --help'.\n",
			prog, argv[optind], prog);
		return 2;
	}
	optind++;
	if (optind < argc)
		o->host = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
		return 2;
	}
	if ((o->mode == CONNECT || o->mode == SCALE) && !o->host) {
		fprintf(stderr, "%s: %s is a client of srdma-server: give its HOST\n", prog,
			names[o->mode]);
		return 2;
	}
	if (o->host ? !o->ca : (!o->cert || !o->key)) {
		fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog,
			o->host ? "the client needs --ca" : "the server needs --cert and --key", prog);
		return 2;
	}
	if (!has_size && o->mode == BW)
		o->size = 65536;
	if (!o->has_iters)
		o->iters = o->mode == LAT ? 1000 : o->mode == BW ? 5000 :
			   o->mode == CONNECT ? 200 : 100;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .port = SRDMA_DEFAULT_PORT, .size = 8, .depth = 128, .parallel = 8,
			  .idle_s = 5, .rounds = 20 };
	int rc = parse(argc, argv, &o);

	if (rc)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	switch (o.mode) {
	case LAT:
	case BW:
		return pair_bench(&o);
	case CONNECT:
		return run_connect(&o);
	case SCALE:
		return run_scale(&o);
	}
	return 2;
}
