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

static const char *prog = "srdma-bench";

enum mode { LAT, BW, CONNECT, SCALE };

struct opts {
	enum mode mode;
	const char *host, *ca, *cert, *key, *dev;
	unsigned long port, size, iters, gid, depth, parallel, server_pid, idle_s, rounds;
	bool all, json, has_gid, has_iters;
};

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
"  connect  -n secure connections made and closed one at a time, then -P at\n"
"           a time, each with full TLS handshakes and with TLS 1.3 session\n"
"           resumption: rate per second and p50/p99 setup time by phase\n"
"           (TCP, TLS, parameter exchange, QP creation, state transitions,\n"
"           binding check). The server needs --max-clients >= -P.\n"
"  scale    connect -n clients (-P at a time) and keep them: the server's\n"
"           memory per connection and CPU while all are idle (needs\n"
"           --server-pid on the same machine), then --rounds echo rounds on\n"
"           all of them; reports failures. The server needs --max-clients\n"
"           >= -n.\n"
"\n"
"Options:\n"
"  -p, --port PORT        TLS port (default 4433)\n"
"  -d, --dev NAME         RDMA device (default: the first)\n"
"  -x, --gid-index N      GID index (default: automatic)\n"
"  -s, --size BYTES       message size, 1..1048576 (default 8; bw 65536)\n"
"  -a, --all              lat, bw: every power of two from 2 to 1048576\n"
"  -n, --iters N          lat: round trips (default 1000); bw: writes per\n"
"                         size (default 5000); connect: connections per row\n"
"                         (default 200); scale: clients (default 100)\n"
"  -t, --depth N          bw: writes in flight, 1..%u (default 128)\n"
"  -I, --inline-size N    lat, bw: QPs that take N bytes inline, and sends\n"
"                         of up to N bytes inline, as perftest's -I (default\n"
"                         0: none; give both sides the same)\n"
"  -P, --parallel N       connect, scale: connections made at once (default 8)\n"
"      --server-pid PID   scale: the srdma-server to measure (same machine)\n"
"      --idle-secs S      scale: how long to measure idle CPU (default 5)\n"
"      --rounds N         scale: echo rounds over all clients (default 20)\n"
"  -c, --cert FILE        server certificate (lat/bw server side)\n"
"  -k, --key FILE         server key (lat/bw server side)\n"
"  -C, --ca FILE          CA to verify the server (client side)\n"
"  -j, --json             one JSON object per result row\n"
"  -h, --help             show this help\n"
"\n"
"Exit status: 0 on success, 1 when a connection or transfer fails (scale:\n"
"when any client failed), 2 on bad usage.\n", SRDMA_MAX_SEND_DEPTH);
}

static void die_oom(void)
{
	fprintf(stderr, "%s: out of memory\n", prog);
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The p-quantile of n sorted values. */
static double pct(const double *t, size_t n, double p)
{
	return n ? t[(size_t)((double)(n - 1) * p)] : 0;
}

/* --- lat and bw: one connection between two srdma-bench --- */

/* Busy-poll one CQ for one completion (the clock is read only now and then,
 * to keep the loop's reaction time that of ibv_poll_cq). */
static int poll_one(struct ibv_cq *cq, const char *what, struct ibv_wc *wc)
{
	double give_up = 0;
	unsigned int spins = 0;
	int n;

	while ((n = ibv_poll_cq(cq, 1, wc)) == 0) {
		if (++spins % 4096)
			continue;
		if (!give_up)
			give_up = now_us() + 10e6;
		else if (now_us() > give_up) {
			fprintf(stderr, "%s: no %s completion in 10 s\n", prog, what);
			return -1;
		}
	}
	if (n < 0 || wc->status != IBV_WC_SUCCESS) {
		fprintf(stderr, "%s: %s completion failed: %s\n", prog, what,
			n < 0 ? "poll error" : ibv_wc_status_str(wc->status));
		return -1;
	}
	return 0;
}

static unsigned long inline_max;	/* --inline-size: QP and sends */

static int post_send(struct srdma_conn *c, uint32_t len, bool signaled)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = len, .lkey = b->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = signaled ? IBV_SEND_SIGNALED : 0 }, *bad;

	if (len <= inline_max)
		wr.send_flags |= IBV_SEND_INLINE;
	return ibv_post_send(srdma_conn_qp(c), &wr, &bad);
}

/* lat signals one send in this many (as perftest's CQ moderation), and
 * reaps that completion after the peer's answer, off the critical path.
 * Below the send queue's depth, so the queue never fills. */
#define LAT_SIGNAL_EVERY (SRDMA_SLOTS / 2)

/*
 * One round trip (number i). The client sends first; the server answers.
 * Receive slots are posted again off the critical path: the server's after
 * its answer has gone, the client's (*repost, from the last round) while
 * its message is in flight.
 */
static int round_trip(struct srdma_conn *c, bool server, uint32_t len, unsigned long i,
		      int *repost)
{
	struct ibv_qp *qp = srdma_conn_qp(c);
	bool signaled = i % LAT_SIGNAL_EVERY == LAT_SIGNAL_EVERY - 1;
	struct ibv_wc wc;

	if (server) {
		if (poll_one(qp->recv_cq, "receive", &wc) || post_send(c, len, signaled) ||
		    srdma_conn_post_recv(c, (unsigned int)wc.wr_id))
			return -1;
	} else {
		if (post_send(c, len, signaled) ||
		    (*repost >= 0 && srdma_conn_post_recv(c, (unsigned int)*repost)) ||
		    poll_one(qp->recv_cq, "receive", &wc))
			return -1;
		*repost = (int)wc.wr_id;
	}
	return signaled ? poll_one(qp->send_cq, "send", &wc) : 0;
}

static int run_lat(struct srdma_conn *c, const struct opts *o)
{
	bool server = !o->host;
	unsigned long first = o->all ? 2 : o->size, last = o->all ? (1ul << 20) : o->size;
	double *t = calloc(o->iters, sizeof(*t));
	int repost = -1;

	if (!t)
		die_oom();
	if (!server && !o->json)
		printf("%10s %10s %10s %10s %10s %10s\n", "bytes", "iters", "min_us",
		       "median_us", "p99_us", "p99.9_us");
	for (unsigned long size = first; size <= last; size *= 2) {
		double t0 = now_us();

		/* One clock read per round trip, as perftest's cycle stamps. */
		for (unsigned long i = 0; i < o->iters; i++) {
			double t1;

			if (round_trip(c, server, (uint32_t)size, i, &repost)) {
				free(t);
				return 1;
			}
			t1 = now_us();
			t[i] = (t1 - t0) / 2;	/* one way, as ib_send_lat */
			t0 = t1;
		}
		if (!server) {
			qsort(t, o->iters, sizeof(*t), cmp_double);
			if (o->json)
				printf("{\"mode\":\"lat\",\"bytes\":%lu,\"iters\":%lu,\"inline\":%s,"
				       "\"min_us\":%.2f,\"median_us\":%.2f,\"p99_us\":%.2f,"
				       "\"p999_us\":%.2f}\n", size, o->iters,
				       size <= inline_max ? "true" : "false", t[0],
				       pct(t, o->iters, 0.5), pct(t, o->iters, 0.99),
				       pct(t, o->iters, 0.999));
			else
				printf("%10lu %10lu %10.2f %10.2f %10.2f %10.2f\n", size, o->iters,
				       t[0], pct(t, o->iters, 0.5), pct(t, o->iters, 0.99),
				       pct(t, o->iters, 0.999));
			fflush(stdout);
		}
		if (!o->all)
			break;
	}
	free(t);
	return 0;
}

/* Writes of size bytes into the peer's window, depth in flight; one in
 * every `every` is signalled, as perftest does with its CQ moderation. */
static int write_burst(struct srdma_conn *c, uint32_t size, unsigned long iters,
		       unsigned long depth, double *secs)
{
	const struct srdma_conn_info *in = srdma_conn_info(c);
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_qp *qp = srdma_conn_qp(c);
	unsigned long every = depth < 100 ? depth : 100, posted = 0, done = 0;
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = size, .lkey = b->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE,
				  .wr.rdma = { .remote_addr = in->remote_addr,
					       .rkey = in->remote_rkey } }, *bad;
	double t0 = now_us(), give_up = t0 + 60e6;
	struct ibv_wc wc[16];

	while (done < iters) {
		/* A window of depth always holds a signalled write (every <=
		 * depth), so a completion always comes to open it again. */
		while (posted < iters && posted - done < depth) {
			unsigned long n = posted + 1;

			/* The last write is always signalled, so done reaches iters. */
			wr.send_flags = (n % every == 0 || n == iters) ? IBV_SEND_SIGNALED : 0;
			if (size <= inline_max)
				wr.send_flags |= IBV_SEND_INLINE;
			wr.wr_id = n;
			if (ibv_post_send(qp, &wr, &bad)) {
				fprintf(stderr, "%s: ibv_post_send (RDMA WRITE) failed\n", prog);
				return -1;
			}
			posted = n;
		}
		int got = ibv_poll_cq(qp->send_cq, 16, wc);

		if (got < 0) {
			fprintf(stderr, "%s: poll error\n", prog);
			return -1;
		}
		for (int i = 0; i < got; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				fprintf(stderr, "%s: RDMA WRITE failed: %s\n", prog,
					ibv_wc_status_str(wc[i].status));
				return -1;
			}
			done = wc[i].wr_id;	/* everything up to it is done */
		}
		if (!got && now_us() > give_up) {
			fprintf(stderr, "%s: RDMA WRITEs stalled for 60 s\n", prog);
			return -1;
		}
	}
	*secs = (now_us() - t0) / 1e6;
	return 0;
}

static int run_bw(struct srdma_conn *c, const struct opts *o)
{
	unsigned long first = o->all ? 2 : o->size, last = o->all ? (1ul << 20) : o->size;
	const struct srdma_conn_info *in = srdma_conn_info(c);

	if (!o->host) {
		/* The server only holds its window open until the client is done. */
		struct pollfd p = { .fd = srdma_conn_ctrl_fd(c), .events = POLLIN };
		struct srdma_err err;
		int rc = 0;

		while (rc == 0) {
			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				return 1;
			rc = srdma_conn_poll_ctrl(c, &err);
		}
		return rc == 1 ? 0 : 1;
	}
	if (in->remote_len < last) {
		fprintf(stderr, "%s: the server's window is %" PRIu32 " bytes, less than %lu: "
			"run it with the same -s/-a\n", prog, in->remote_len, last);
		return 1;
	}
	if (!o->json)
		printf("%10s %10s %8s %14s %12s\n", "bytes", "iters", "depth", "MiB/s", "Mmsg/s");
	for (unsigned long size = first; size <= last; size *= 2) {
		double secs;

		if (write_burst(c, (uint32_t)size, o->iters, o->depth, &secs))
			return 1;
		double mib = (double)size * (double)o->iters / secs / (1024.0 * 1024.0);
		double mpps = (double)o->iters / secs / 1e6;

		if (o->json)
			printf("{\"mode\":\"bw\",\"bytes\":%lu,\"iters\":%lu,\"depth\":%lu,"
			       "\"mib_per_s\":%.2f,\"mmsg_per_s\":%.6f}\n", size, o->iters,
			       o->depth, mib, mpps);
		else
			printf("%10lu %10lu %8lu %14.2f %12.6f\n", size, o->iters, o->depth, mib,
			       mpps);
		fflush(stdout);
		if (!o->all)
			break;
	}
	return 0;
}

static int pair_bench(const struct opts *o)
{
	struct srdma_conn *c = NULL;
	struct srdma_listener *l = NULL;	/* its device serves the connection */
	struct srdma_err err;
	size_t bufsz = o->all ? (1ul << 20) : (o->size < 64 ? 64 : o->size);
	int rc;

	if (o->host) {
		struct srdma_client_opts co;

		srdma_client_opts_init(&co);
		co.port = (uint16_t)o->port;
		co.ca_file = o->ca;
		co.rdma.dev_name = o->dev;
		co.rdma.buf_size = bufsz;
		co.rdma.send_depth = o->mode == BW ? (unsigned int)o->depth : 0;
		co.rdma.max_inline = (unsigned int)inline_max;
		if (o->has_gid)
			co.rdma.gid_index = (int)o->gid;
		rc = srdma_connect(&co, o->host, &c, &err);
	} else {
		struct srdma_server_opts so;

		srdma_server_opts_init(&so);
		so.port = (uint16_t)o->port;
		so.cert_file = o->cert;
		so.key_file = o->key;
		so.rdma.dev_name = o->dev;
		so.rdma.buf_size = bufsz;
		so.rdma.max_inline = (unsigned int)inline_max;
		if (o->has_gid)
			so.rdma.gid_index = (int)o->gid;
		rc = srdma_listen(&so, &l, &err);
		if (!rc)
			rc = srdma_accept(l, &c, &err);
	}
	if (rc) {
		fprintf(stderr, "%s: %s failed: %s\n", prog, err.step, err.msg);
		srdma_listener_free(l);
		return 1;
	}
	rc = o->mode == LAT ? run_lat(c, o) : run_bw(c, o);
	srdma_conn_close(c, 0, NULL);
	srdma_listener_free(l);
	return rc;
}

/* --- connect and scale: many connections to one srdma-server --- */

static struct srdma_client *new_client(const struct opts *o, bool resume)
{
	struct srdma_client_opts co;
	struct srdma_client *cl;
	struct srdma_err err;

	srdma_client_opts_init(&co);
	co.port = (uint16_t)o->port;
	co.ca_file = o->ca;
	co.rdma.dev_name = o->dev;
	co.resume = resume;
	co.rdma.max_inline = (unsigned int)inline_max;
	if (o->has_gid)
		co.rdma.gid_index = (int)o->gid;
	if (srdma_client_new(&co, &cl, &err)) {
		fprintf(stderr, "%s: %s failed: %s\n", prog, err.step, err.msg);
		return NULL;
	}
	return cl;
}

/* One row of the connect benchmark, shared by its threads. */
struct crun {
	const struct opts *o;
	struct srdma_client *cl;
	unsigned long n;
	atomic_ulong next;
	atomic_ulong failed, resumed;
	struct srdma_setup_times *times;	/* per connection */
	double *total_us;			/* client's wall time per setup */
	bool keep;				/* scale: keep them open */
	struct srdma_conn **conns;
	char first_err[320];
	pthread_mutex_t lock;
};

static void *connect_worker(void *arg)
{
	struct crun *r = arg;
	unsigned long i;

	while ((i = atomic_fetch_add(&r->next, 1)) < r->n) {
		struct srdma_conn *c;
		struct srdma_err err;
		double t0 = now_us();

		if (srdma_client_connect(r->cl, r->o->host, &c, &err)) {
			atomic_fetch_add(&r->failed, 1);
			r->total_us[i] = -1;
			pthread_mutex_lock(&r->lock);
			if (!r->first_err[0])
				snprintf(r->first_err, sizeof(r->first_err), "%s: %s",
					 err.step, err.msg);
			pthread_mutex_unlock(&r->lock);
			continue;
		}
		r->total_us[i] = now_us() - t0;
		r->times[i] = srdma_conn_info(c)->times;
		if (srdma_conn_info(c)->tls_resumed)
			atomic_fetch_add(&r->resumed, 1);
		if (r->keep)
			r->conns[i] = c;
		else
			srdma_conn_close(c, 0, NULL);
	}
	return NULL;
}

/* A run of o->iters connections: its client and per-connection records. */
static int crun_init(struct crun *r, const struct opts *o, bool resume, bool keep)
{
	memset(r, 0, sizeof(*r));
	r->o = o;
	r->n = o->iters;
	r->keep = keep;
	r->cl = new_client(o, resume);
	if (!r->cl)
		return 1;
	pthread_mutex_init(&r->lock, NULL);
	r->times = calloc(r->n, sizeof(*r->times));
	r->total_us = calloc(r->n, sizeof(*r->total_us));
	r->conns = keep ? calloc(r->n, sizeof(*r->conns)) : NULL;
	if (!r->times || !r->total_us || (keep && !r->conns))
		die_oom();
	return 0;
}

static void crun_free(struct crun *r)
{
	if (r->conns)
		for (unsigned long i = 0; i < r->n; i++)
			srdma_conn_close(r->conns[i], 0, NULL);
	srdma_client_free(r->cl);
	free(r->times);
	free(r->total_us);
	free(r->conns);
	pthread_mutex_destroy(&r->lock);
}

/* Make r->n connections with p threads; returns the wall time in s. */
static double run_connects(struct crun *r, unsigned long p)
{
	pthread_t *th = calloc(p, sizeof(*th));
	unsigned long started = 0;
	double t0 = now_us();

	if (!th)
		die_oom();
	for (; started < p; started++)
		if (pthread_create(&th[started], NULL, connect_worker, r))
			break;
	if (!started)
		connect_worker(r);
	for (unsigned long i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	return (now_us() - t0) / 1e6;
}

/* p50 and p99 of one phase over the successful connections. */
static void phase_pct(const struct crun *r, size_t off, double *buf, double *p50,
		      double *p99)
{
	size_t n = 0;

	for (unsigned long i = 0; i < r->n; i++)
		if (r->total_us[i] >= 0)
			buf[n++] = *(const uint32_t *)((const char *)&r->times[i] + off);
	qsort(buf, n, sizeof(*buf), cmp_double);
	*p50 = pct(buf, n, 0.5);
	*p99 = pct(buf, n, 0.99);
}

static const struct {
	const char *name;
	size_t off;
} phases[] = {
	{ "tcp", offsetof(struct srdma_setup_times, tcp_us) },
	{ "tls", offsetof(struct srdma_setup_times, tls_us) },
	{ "params", offsetof(struct srdma_setup_times, params_us) },
	{ "qp_create", offsetof(struct srdma_setup_times, qp_create_us) },
	{ "qp_connect", offsetof(struct srdma_setup_times, qp_connect_us) },
	{ "binding", offsetof(struct srdma_setup_times, binding_us) },
	{ "total", offsetof(struct srdma_setup_times, total_us) },
};
#define NPHASES (sizeof(phases) / sizeof(phases[0]))

static int connect_row(const struct opts *o, bool resume, unsigned long p)
{
	double secs, p50[NPHASES], p99[NPHASES], *buf;
	struct crun r;
	unsigned long ok;
	int rc = 0;

	if (crun_init(&r, o, resume, false))
		return 1;
	buf = calloc(r.n, sizeof(*buf));
	if (!buf)
		die_oom();
	if (resume) {
		/* One full handshake first, for the ticket (not counted). */
		struct srdma_conn *c;
		struct srdma_err err;

		if (srdma_client_connect(r.cl, o->host, &c, &err) == 0)
			srdma_conn_close(c, 0, NULL);
	}
	secs = run_connects(&r, p);
	ok = r.n - atomic_load(&r.failed);
	for (size_t k = 0; k < NPHASES; k++)
		phase_pct(&r, phases[k].off, buf, &p50[k], &p99[k]);
	if (o->json) {
		printf("{\"mode\":\"connect\",\"resume\":%s,\"parallel\":%lu,\"connections\":%lu,"
		       "\"failed\":%lu,\"resumed\":%lu,\"seconds\":%.3f,\"per_s\":%.2f",
		       resume ? "true" : "false", p, r.n, r.n - ok, atomic_load(&r.resumed),
		       secs, (double)ok / secs);
		for (size_t k = 0; k < NPHASES; k++)
			printf(",\"%s_p50_us\":%.0f,\"%s_p99_us\":%.0f", phases[k].name, p50[k],
			       phases[k].name, p99[k]);
		printf("}\n");
	} else {
		printf("%-7s %3lu %6lu %6lu %7lu %9.1f", resume ? "resumed" : "full", p, r.n,
		       r.n - ok, atomic_load(&r.resumed), (double)ok / secs);
		for (size_t k = 0; k < NPHASES; k++)
			printf(" %6.0f/%-6.0f", p50[k], p99[k]);
		printf("\n");
	}
	fflush(stdout);
	if (r.first_err[0]) {
		fprintf(stderr, "%s: %lu connections failed; first: %s\n", prog, r.n - ok,
			r.first_err);
		rc = 1;
	}
	free(buf);
	crun_free(&r);
	return rc;
}

static int run_connect(const struct opts *o)
{
	int rc = 0;

	if (!o->json) {
		printf("%-7s %3s %6s %6s %7s %9s", "tls", "par", "conns", "failed", "resumed",
		       "conn/s");
		for (size_t k = 0; k < NPHASES; k++)
			printf(" %13s", phases[k].name);
		printf("\n%47s(each phase: p50/p99 us)\n", "");
	}
	for (int pass = 0; pass < (o->parallel > 1 ? 2 : 1); pass++)
		for (int resume = 0; resume < 2; resume++)
			rc |= connect_row(o, resume, pass ? o->parallel : 1);
	return rc;
}

/* The server's resident memory (kB) and CPU ticks, from /proc. */
static bool proc_stats(unsigned long pid, unsigned long *rss_kb, unsigned long long *ticks)
{
	char path[64], line[512];
	unsigned long long ut, st;
	FILE *f;
	bool ok = false;

	snprintf(path, sizeof(path), "/proc/%lu/status", pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu kB", rss_kb) == 1)
			ok = true;
	fclose(f);
	snprintf(path, sizeof(path), "/proc/%lu/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	/* Fields 14 and 15, after the ")" that ends the command name. */
	if (!fgets(line, sizeof(line), f) || !strrchr(line, ')') ||
	    sscanf(strrchr(line, ')') + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
		   &ut, &st) != 2)
		ok = false;
	fclose(f);
	*ticks = ut + st;
	return ok;
}

/* One echo on every open connection at once; returns the failures. */
static unsigned long echo_round(struct srdma_conn **conns, unsigned long n, uint32_t size)
{
	unsigned long failed = 0, waiting = 0;
	char *want = calloc(n, 1);
	double give_up = now_us() + 30e6;

	if (!want)
		die_oom();
	for (unsigned long i = 0; i < n; i++) {
		if (!conns[i])
			continue;
		memset(srdma_conn_send_buf(conns[i])->addr, 'a' + (int)(i % 26), size);
		if (post_send(conns[i], size, true)) {
			failed++;
			continue;
		}
		want[i] = 2;	/* the send's completion and the echo */
		waiting++;
	}
	while (waiting && now_us() < give_up) {
		for (unsigned long i = 0; i < n; i++) {
			struct ibv_wc wc;

			if (!want[i])
				continue;
			while (want[i] && srdma_conn_next_wc(conns[i], 0, &wc) == 1) {
				if (wc.status != IBV_WC_SUCCESS) {
					failed++;
					want[i] = 0;
					waiting--;
					break;
				}
				if (wc.opcode & IBV_WC_RECV) {
					srdma_conn_post_recv(conns[i], (unsigned int)wc.wr_id);
					if (!(wc.wc_flags & IBV_WC_WITH_IMM) || wc.byte_len != size) {
						failed++;
						want[i] = 0;
						waiting--;
						break;
					}
				}
				if (--want[i] == 0)
					waiting--;
			}
		}
	}
	failed += waiting;
	free(want);
	return failed;
}

/* Enough descriptors for n connections (socket and channel each). */
static void fit_nofile(unsigned long n)
{
	unsigned long have = raise_nofile(2 * n + 64);

	if (have < 2 * n + 64)
		fprintf(stderr, "%s: warning: only %lu descriptors for %lu connections\n", prog,
			have, n);
}

static int run_scale(const struct opts *o)
{
	struct crun r;
	unsigned long rss0 = 0, rss1 = 0, ok, echo_failed = 0;
	unsigned long long tk0 = 0, tk1 = 0;
	bool have_pid = o->server_pid != 0;
	double secs, echo_secs, cpu_pct = -1, kb_per_conn = -1;
	long hz = sysconf(_SC_CLK_TCK);
	uint32_t size = (uint32_t)(o->size < SRDMA_DEFAULT_BUF_SIZE ? o->size : 64);
	int rc;

	fit_nofile(o->iters);
	if (have_pid && !proc_stats(o->server_pid, &rss0, &tk0)) {
		fprintf(stderr, "%s: cannot read /proc/%lu: is --server-pid on this machine?\n",
			prog, o->server_pid);
		return 1;
	}
	if (crun_init(&r, o, false, true))
		return 1;
	secs = run_connects(&r, o->parallel);
	ok = r.n - atomic_load(&r.failed);
	if (r.first_err[0])
		fprintf(stderr, "%s: %lu connections failed; first: %s\n", prog, r.n - ok,
			r.first_err);
	if (have_pid) {
		/* Let the server settle, then watch it with every client idle. */
		sleep(1);
		if (!proc_stats(o->server_pid, &rss1, &tk0))
			have_pid = false;
		sleep((unsigned int)o->idle_s);
		if (have_pid && proc_stats(o->server_pid, &rss1, &tk1)) {
			cpu_pct = 100.0 * (double)(tk1 - tk0) / (double)hz / (double)o->idle_s;
			kb_per_conn = ok ? ((double)rss1 - (double)rss0) / (double)ok : -1;
		}
	}
	double t0 = now_us();

	for (unsigned long k = 0; k < o->rounds; k++)
		echo_failed += echo_round(r.conns, r.n, size);
	echo_secs = (now_us() - t0) / 1e6;
	double echoes = (double)ok * (double)o->rounds - (double)echo_failed;

	if (o->json)
		printf("{\"mode\":\"scale\",\"clients\":%lu,\"connected\":%lu,\"failed\":%lu,"
		       "\"connect_s\":%.2f,\"server_rss_kb_before\":%lu,\"server_rss_kb\":%lu,"
		       "\"server_kb_per_conn\":%.1f,\"idle_s\":%lu,\"server_idle_cpu_pct\":%.2f,"
		       "\"echo_rounds\":%lu,\"echo_bytes\":%" PRIu32 ",\"echo_failed\":%lu,"
		       "\"echo_per_s\":%.1f}\n", r.n, ok, r.n - ok, secs, rss0, rss1,
		       kb_per_conn, o->idle_s, cpu_pct, o->rounds, size, echo_failed,
		       echoes / echo_secs);
	else {
		printf("clients %lu: connected %lu, failed %lu, in %.2f s\n", r.n, ok, r.n - ok,
		       secs);
		if (kb_per_conn >= 0)
			printf("server RSS %lu kB idle before, %lu kB with %lu clients: %.1f kB "
			       "per connection\nserver CPU with all idle: %.2f%% over %lu s\n",
			       rss0, rss1, ok, kb_per_conn, cpu_pct, o->idle_s);
		printf("echo: %lu rounds of %" PRIu32 " B on every client, %lu failed, "
		       "%.1f echoes/s\n", o->rounds, size, echo_failed, echoes / echo_secs);
	}
	fflush(stdout);
	rc = ok == r.n && echo_failed == 0 ? 0 : 1;
	crun_free(&r);
	return rc;
}

/* --- options --- */

static int parse(int argc, char **argv, struct opts *o)
{
	enum { OPT_PID = 256, OPT_IDLE, OPT_ROUNDS };
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "dev", required_argument, NULL, 'd' },
		{ "gid-index", required_argument, NULL, 'x' },
		{ "size", required_argument, NULL, 's' },
		{ "all", no_argument, NULL, 'a' },
		{ "iters", required_argument, NULL, 'n' },
		{ "depth", required_argument, NULL, 't' },
		{ "inline-size", required_argument, NULL, 'I' },
		{ "parallel", required_argument, NULL, 'P' },
		{ "server-pid", required_argument, NULL, OPT_PID },
		{ "idle-secs", required_argument, NULL, OPT_IDLE },
		{ "rounds", required_argument, NULL, OPT_ROUNDS },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "ca", required_argument, NULL, 'C' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static const char *const names[] = { "lat", "bw", "connect", "scale" };
	bool has_size = false;
	int ch;

	while ((ch = getopt_long(argc, argv, "p:d:x:s:an:t:I:P:c:k:C:jh", longopts, NULL)) != -1) {
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
			has_size = true;
			break;
		case 'a': o->all = true; break;
		case 'n':
			if (!parse_ulong(prog, "--iters", optarg, 1, 10000000, &o->iters))
				return 2;
			o->has_iters = true;
			break;
		case 't':
			if (!parse_ulong(prog, "--depth", optarg, 1, SRDMA_MAX_SEND_DEPTH, &o->depth))
				return 2;
			break;
		case 'I':
			if (!parse_ulong(prog, "--inline-size", optarg, 0, SRDMA_MAX_INLINE, &inline_max))
				return 2;
			break;
		case 'P':
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
