/*
 * srdma-bench: benchmarks over a secure srdma connection, with perftest-like
 * conventions. Run the same command on both sides, the server without HOST.
 *
 * This first cut has one mode, lat: SEND/RECV ping-pong latency per message
 * size (min, median, p99, p99.9), busy-polling the CQs as perftest does.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <srdma.h>
#include "common.h"

static const char *prog = "srdma-bench";

struct opts {
	const char *mode, *host, *ca, *cert, *key, *dev;
	unsigned long port, size, iters, gid;
	bool all, json, has_gid;
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: srdma-bench lat [OPTIONS] [HOST]\n"
"\n"
"Benchmarks over one secure srdma connection (TLS bootstrap, random PSNs,\n"
"verified RC QP). Run it on the server without HOST, then on the client with\n"
"HOST and the same options.\n"
"\n"
"Modes:\n"
"  lat                    SEND/RECV ping-pong latency per size: min, median,\n"
"                         p99, p99.9 of the round trip halved (as ib_send_lat)\n"
"\n"
"Options:\n"
"  -p, --port PORT        TLS port (default 4433)\n"
"  -d, --dev NAME         RDMA device (default: the first)\n"
"  -x, --gid-index N      GID index (default: automatic)\n"
"  -s, --size BYTES       message size, 1..1048576 (default 8)\n"
"  -a, --all              every power of two from 2 to 1048576 bytes\n"
"  -n, --iters N          round trips per size, 1..10000000 (default 1000)\n"
"  -c, --cert FILE        server certificate (server side)\n"
"  -k, --key FILE         server key (server side)\n"
"  -C, --ca FILE          CA to verify the server (client side)\n"
"  -j, --json             one JSON object per size\n"
"  -h, --help             show this help\n"
"\n"
"Exit status: 0 on success, 1 when the connection or a transfer fails, 2 on\n"
"bad usage.\n");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Busy-poll the QP's CQs for one completion of the wanted kind. */
static int poll_one(struct ibv_qp *qp, bool recv, struct ibv_wc *wc)
{
	struct ibv_cq *cq = recv ? qp->recv_cq : qp->send_cq;
	double give_up = now_us() + 10e6;
	int n;

	while ((n = ibv_poll_cq(cq, 1, wc)) == 0)
		if (now_us() > give_up) {
			fprintf(stderr, "%s: no %s completion in 10 s\n", prog, recv ? "receive" : "send");
			return -1;
		}
	if (n < 0 || wc->status != IBV_WC_SUCCESS) {
		fprintf(stderr, "%s: %s completion failed: %s\n", prog, recv ? "receive" : "send",
			n < 0 ? "poll error" : ibv_wc_status_str(wc->status));
		return -1;
	}
	return 0;
}

static int post_send(struct srdma_conn *c, uint32_t len)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = len, .lkey = b->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND }, *bad;

	return ibv_post_send(srdma_conn_qp(c), &wr, &bad);
}

/* One round trip. The client sends first; the server answers. */
static int round_trip(struct srdma_conn *c, bool server, uint32_t len)
{
	struct ibv_qp *qp = srdma_conn_qp(c);
	struct ibv_wc wc;

	if (server) {
		if (poll_one(qp, true, &wc) || srdma_conn_post_recv(c, (unsigned int)wc.wr_id) ||
		    post_send(c, len) || poll_one(qp, false, &wc))
			return -1;
		return 0;
	}
	if (post_send(c, len) || poll_one(qp, false, &wc) || poll_one(qp, true, &wc) ||
	    srdma_conn_post_recv(c, (unsigned int)wc.wr_id))
		return -1;
	return 0;
}

static int run_lat(struct srdma_conn *c, const struct opts *o)
{
	bool server = !o->host;
	unsigned long first = o->all ? 2 : o->size, last = o->all ? (1ul << 20) : o->size;
	double *t = calloc(o->iters, sizeof(*t));

	if (!t) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return 1;
	}
	if (!server && !o->json)
		printf("%10s %10s %10s %10s %10s %10s\n", "bytes", "iters", "min_us",
		       "median_us", "p99_us", "p99.9_us");
	for (unsigned long size = first; size <= last; size *= 2) {
		for (unsigned long i = 0; i < o->iters; i++) {
			double t0 = now_us();

			if (round_trip(c, server, (uint32_t)size)) {
				free(t);
				return 1;
			}
			t[i] = (now_us() - t0) / 2;	/* one way, as ib_send_lat */
		}
		if (!server) {
			qsort(t, o->iters, sizeof(*t), cmp_double);
#define PCT(p) t[(size_t)((double)(o->iters - 1) * (p))]
			if (o->json)
				printf("{\"mode\":\"lat\",\"bytes\":%lu,\"iters\":%lu,\"min_us\":%.2f,"
				       "\"median_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f}\n", size,
				       o->iters, t[0], PCT(0.5), PCT(0.99), PCT(0.999));
			else
				printf("%10lu %10lu %10.2f %10.2f %10.2f %10.2f\n", size, o->iters,
				       t[0], PCT(0.5), PCT(0.99), PCT(0.999));
#undef PCT
			fflush(stdout);
		}
		if (!o->all)
			break;
	}
	free(t);
	return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "dev", required_argument, NULL, 'd' },
		{ "gid-index", required_argument, NULL, 'x' },
		{ "size", required_argument, NULL, 's' },
		{ "all", no_argument, NULL, 'a' },
		{ "iters", required_argument, NULL, 'n' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "ca", required_argument, NULL, 'C' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "p:d:x:s:an:c:k:C:jh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			if (!parse_ulong(prog, "--port", optarg, 1, 65535, &o->port))
				return 2;
			break;
		case 'd': o->dev = optarg; break;
		case 'x':
			if (!parse_ulong(prog, "--gid-index", optarg, 0, 65535, &o->gid))
				return 2;
			o->has_gid = true;
			break;
		case 's':
			if (!parse_ulong(prog, "--size", optarg, 1, 1ul << 20, &o->size))
				return 2;
			break;
		case 'a': o->all = true; break;
		case 'n':
			if (!parse_ulong(prog, "--iters", optarg, 1, 10000000, &o->iters))
				return 2;
			break;
		case 'c': o->cert = optarg; break;
		case 'k': o->key = optarg; break;
		case 'C': o->ca = optarg; break;
		case 'j': o->json = true; break;
		case 'h': usage(stdout); exit(0);
		default:
			fprintf(stderr, "Try '%s --help'.\n", prog);
			return 2;
		}
	}
	if (optind >= argc || strcmp(argv[optind], "lat") != 0) {
		fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog,
			optind >= argc ? "no mode given (lat)" : "unknown mode (lat)", prog);
		return 2;
	}
	o->mode = argv[optind++];
	if (optind < argc)
		o->host = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
		return 2;
	}
	if (o->host ? !o->ca : (!o->cert || !o->key)) {
		fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog,
			o->host ? "the client needs --ca" : "the server needs --cert and --key", prog);
		return 2;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .port = SRDMA_DEFAULT_PORT, .size = 8, .iters = 1000 };
	struct srdma_conn *c = NULL;
	struct srdma_listener *l = NULL;	/* its device serves the connection */
	struct srdma_err err;
	size_t bufsz;
	int rc = parse(argc, argv, &o);

	if (rc)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	bufsz = o.all ? (1ul << 20) : (o.size < 64 ? 64 : o.size);
	if (o.host) {
		struct srdma_client_opts co;

		srdma_client_opts_init(&co);
		co.port = (uint16_t)o.port;
		co.ca_file = o.ca;
		co.rdma.dev_name = o.dev;
		co.rdma.buf_size = bufsz;
		if (o.has_gid)
			co.rdma.gid_index = (int)o.gid;
		rc = srdma_connect(&co, o.host, &c, &err);
	} else {
		struct srdma_server_opts so;

		srdma_server_opts_init(&so);
		so.port = (uint16_t)o.port;
		so.cert_file = o.cert;
		so.key_file = o.key;
		so.rdma.dev_name = o.dev;
		so.rdma.buf_size = bufsz;
		if (o.has_gid)
			so.rdma.gid_index = (int)o.gid;
		rc = srdma_listen(&so, &l, &err);
		if (!rc)
			rc = srdma_accept(l, &c, &err);
	}
	if (rc) {
		fprintf(stderr, "%s: %s failed: %s\n", prog, err.step, err.msg);
		srdma_listener_free(l);
		return 1;
	}
	rc = run_lat(c, &o);
	srdma_conn_close(c, 0, NULL);
	srdma_listener_free(l);
	return rc;
}
