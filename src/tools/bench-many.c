/*
 * srdma-bench connect and scale: many connections to one srdma-server, on
 * the library's public API only.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
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
	co.handshake_ms = o->handshake_ms;
	co.seal = o->seal;
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
	uint32_t *qpn;				/* the server's QPN per setup */
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
		r->qpn[i] = srdma_conn_info(c)->remote_qpn;
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
	r->qpn = calloc(r->n, sizeof(*r->qpn));
	r->conns = keep ? calloc(r->n, sizeof(*r->conns)) : NULL;
	if (!r->times || !r->total_us || !r->qpn || (keep && !r->conns))
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
	free(r->qpn);
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

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * What an observer of consecutive connections learns of the next one's
 * server QPN from the last: the steps between them (mod 2^24), and their
 * min-entropy, -log2 of the most frequent step's share (the best guess's
 * odds). n steps cannot show more than log2(n) bits. Sequential rows only.
 */
static void qpn_steps(const struct crun *r, unsigned long *steps, unsigned long *distinct,
		      double *bits)
{
	uint32_t *d = calloc(r->n ? r->n : 1, sizeof(*d));
	unsigned long n = 0, best = 0, run = 0;

	if (!d)
		die_oom();
	for (unsigned long i = 1; i < r->n; i++)
		if (r->total_us[i] >= 0 && r->total_us[i - 1] >= 0)
			d[n++] = (r->qpn[i] - r->qpn[i - 1]) & 0xffffff;
	qsort(d, n, sizeof(*d), cmp_u32);
	*distinct = 0;
	for (unsigned long i = 0; i < n; i++) {
		run = i && d[i] == d[i - 1] ? run + 1 : 1;
		if (run == 1)
			(*distinct)++;
		if (run > best)
			best = run;
	}
	*steps = n;
	*bits = n ? log2((double)n / (double)best) : 0;
	free(d);
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
	double secs, p50[NPHASES], p99[NPHASES], *buf, bits;
	struct crun r;
	unsigned long ok, steps, distinct;
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
	qpn_steps(&r, &steps, &distinct, &bits);
	if (o->json) {
		printf("{\"mode\":\"connect\",\"resume\":%s,\"parallel\":%lu,\"connections\":%lu,"
		       "\"failed\":%lu,\"resumed\":%lu,\"seconds\":%.3f,\"per_s\":%.2f",
		       resume ? "true" : "false", p, r.n, r.n - ok, atomic_load(&r.resumed),
		       secs, (double)ok / secs);
		for (size_t k = 0; k < NPHASES; k++)
			printf(",\"%s_p50_us\":%.0f,\"%s_p99_us\":%.0f", phases[k].name, p50[k],
			       phases[k].name, p99[k]);
		if (p == 1)
			printf(",\"qpn_steps\":%lu,\"qpn_steps_distinct\":%lu,"
			       "\"qpn_step_min_entropy_bits\":%.2f", steps, distinct, bits);
		printf("}\n");
	} else {
		printf("%-7s %3lu %6lu %6lu %7lu %9.1f", resume ? "resumed" : "full", p, r.n,
		       r.n - ok, atomic_load(&r.resumed), (double)ok / secs);
		for (size_t k = 0; k < NPHASES; k++)
			printf(" %6.0f/%-6.0f", p50[k], p99[k]);
		printf("\n");
		if (p == 1 && steps)
			printf("        the server's QPN from one connection to the next: %lu steps, "
			       "%lu distinct, min-entropy %.1f bits (at most %.1f can show)\n",
			       steps, distinct, bits, log2((double)steps));
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

int run_connect(const struct opts *o)
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

int run_scale(const struct opts *o)
{
	struct crun r;
	unsigned long rss0 = 0, rss1 = 0, ok, echo_failed = 0;
	unsigned long long tk0 = 0, tk1 = 0;
	bool have_pid = o->server_pid != 0;
	double secs, echo_secs, cpu_pct = -1, kb_per_conn = -1, setup[3] = { 0 }, *buf;
	size_t nok = 0;
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
	/* Setup time as each client saw it: dial to connected, a wait in the
	 * server's accept queue included. */
	buf = calloc(r.n, sizeof(*buf));
	if (!buf)
		die_oom();
	for (unsigned long i = 0; i < r.n; i++)
		if (r.total_us[i] >= 0)
			buf[nok++] = r.total_us[i] / 1000;
	qsort(buf, nok, sizeof(*buf), cmp_double);
	setup[0] = pct(buf, nok, 0.5);
	setup[1] = pct(buf, nok, 0.99);
	setup[2] = nok ? buf[nok - 1] : 0;
	free(buf);
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
		printf("{\"mode\":\"scale\",\"clients\":%lu,\"parallel\":%lu,\"connected\":%lu,"
		       "\"failed\":%lu,\"connect_s\":%.2f,\"setup_p50_ms\":%.1f,"
		       "\"setup_p99_ms\":%.1f,\"setup_max_ms\":%.1f,"
		       "\"server_rss_kb_before\":%lu,\"server_rss_kb\":%lu,"
		       "\"server_kb_per_conn\":%.1f,\"idle_s\":%lu,\"server_idle_cpu_pct\":%.2f,"
		       "\"echo_rounds\":%lu,\"echo_bytes\":%" PRIu32 ",\"echo_failed\":%lu,"
		       "\"echo_per_s\":%.1f}\n", r.n, o->parallel, ok, r.n - ok, secs, setup[0],
		       setup[1], setup[2], rss0, rss1,
		       kb_per_conn, o->idle_s, cpu_pct, o->rounds, size, echo_failed,
		       echoes / echo_secs);
	else {
		printf("clients %lu, %lu at a time: connected %lu, failed %lu, in %.2f s\n"
		       "setup time per client: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", r.n,
		       o->parallel, ok, r.n - ok, secs, setup[0], setup[1], setup[2]);
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

