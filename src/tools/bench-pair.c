/*
 * srdma-bench lat and bw: one connection between two srdma-bench, CQs
 * busy-polled as perftest does.
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

unsigned long inline_max;

int post_send(struct srdma_conn *c, uint32_t len, bool signaled)
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

/* Sealed lat: the message (src, len bytes) sealed into send slot 0. */
static int seal_out(struct srdma_conn *c, const void *src, uint32_t len, uint32_t *wire)
{
	size_t n;

	if (srdma_conn_seal(c, 1, src, len, srdma_conn_send_buf(c)->addr,
			    srdma_conn_buf_size(c), &n)) {
		fprintf(stderr, "%s: cannot seal\n", prog);
		return -1;
	}
	*wire = (uint32_t)n;
	return 0;
}

/* Sealed: open what arrived in receive slot wc->wr_id; its opened bytes
 * (len of them) in *msg. */
static int open_in(struct srdma_conn *c, const struct ibv_wc *wc, uint32_t len, void **msg)
{
	uint8_t *p = (uint8_t *)srdma_conn_recv_buf(c)->addr + wc->wr_id * srdma_conn_buf_size(c);
	struct srdma_err err;
	uint16_t kind;
	size_t n;

	if (srdma_conn_open(c, p, wc->byte_len, &kind, msg, &n) || n != len) {
		srdma_conn_poll_ctrl(c, &err);
		fprintf(stderr, "%s: a sealed message did not open: %s\n", prog, err.msg);
		return -1;
	}
	return 0;
}

/*
 * One round trip (number i). The client sends first; the server answers.
 * Receive slots are posted again off the critical path: the server's after
 * its answer has gone, the client's (*repost, from the last round) while
 * its message is in flight.
 */
static int round_trip(struct srdma_conn *c, bool server, uint32_t len, unsigned long i,
		      int *repost, const void *src)
{
	struct ibv_qp *qp = srdma_conn_qp(c);
	bool signaled = i % LAT_SIGNAL_EVERY == LAT_SIGNAL_EVERY - 1;
	struct ibv_wc wc;
	uint32_t wire;
	void *msg;

	if (src) {	/* sealed: each side opens what came and seals what goes */
		if (server) {
			if (poll_one(qp->recv_cq, "receive", &wc) || open_in(c, &wc, len, &msg) ||
			    seal_out(c, msg, len, &wire) || post_send(c, wire, signaled) ||
			    srdma_conn_post_recv(c, (unsigned int)wc.wr_id))
				return -1;
		} else {
			if (seal_out(c, src, len, &wire) || post_send(c, wire, signaled) ||
			    (*repost >= 0 && srdma_conn_post_recv(c, (unsigned int)*repost)) ||
			    poll_one(qp->recv_cq, "receive", &wc) || open_in(c, &wc, len, &msg))
				return -1;
			*repost = (int)wc.wr_id;
		}
		return signaled ? poll_one(qp->send_cq, "send", &wc) : 0;
	}
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
	bool sealed = srdma_conn_info(c)->seal != SRDMA_SEAL_OFF;
	uint8_t *src = sealed ? malloc(last) : NULL;
	int repost = -1;

	if (!t || (sealed && !src))
		die_oom();
	if (src)
		for (unsigned long k = 0; k < last; k++)
			src[k] = (uint8_t)k;
	if (!server && !o->json)
		printf("%10s %10s %10s %10s %10s %10s\n", "bytes", "iters", "min_us",
		       "median_us", "p99_us", "p99.9_us");
	for (unsigned long size = first; size <= last; size *= 2) {
		double t0 = now_us();

		/* One clock read per round trip, as perftest's cycle stamps. */
		for (unsigned long i = 0; i < o->iters; i++) {
			double t1;

			if (round_trip(c, server, (uint32_t)size, i, &repost, src)) {
				free(t);
				free(src);
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
				       "\"seal\":\"%s\",\"min_us\":%.2f,\"median_us\":%.2f,"
				       "\"p99_us\":%.2f,\"p999_us\":%.2f}\n", size, o->iters,
				       size + (sealed ? SRDMA_SEAL_OVERHEAD : 0) <= inline_max ?
				       "true" : "false", srdma_seal_name(o->seal), t[0],
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
	free(src);
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

/*
 * Sealed bw: each write is sealed into one of SEAL_BW_SLOTS slots of the
 * window (size + SRDMA_SEAL_OVERHEAD bytes each), notified with its slot
 * number as the immediate; the server opens it there and gives the slot
 * back with an empty SEND carrying the same number. So every byte written
 * is sealed by the client and opened (checked) by the server before it
 * counts, and no slot is written again before it was opened.
 */
#define SEAL_BW_SLOTS 4u

static int write_burst_sealed(struct srdma_conn *c, uint32_t size, unsigned long iters,
			      double *secs)
{
	const struct srdma_conn_info *in = srdma_conn_info(c);
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_qp *qp = srdma_conn_qp(c);
	size_t stride = size + SRDMA_SEAL_OVERHEAD, n;
	unsigned long posted = 0, done = 0;
	uint8_t *src = malloc(size);
	double t0 = now_us(), give_up = t0 + 60e6;
	struct ibv_wc wc[16];
	int rc = -1;

	if (!src)
		die_oom();
	for (uint32_t k = 0; k < size; k++)
		src[k] = (uint8_t)k;
	while (done < iters) {
		while (posted < iters && posted - done < SEAL_BW_SLOTS) {
			uint32_t j = (uint32_t)(posted % SEAL_BW_SLOTS);
			uint8_t *out = (uint8_t *)b->addr + j * stride;
			struct ibv_sge sge = { .addr = (uintptr_t)out, .length = (uint32_t)stride,
					       .lkey = b->lkey };
			struct ibv_send_wr wr = {
				.wr_id = posted + 1, .sg_list = &sge, .num_sge = 1,
				.opcode = IBV_WR_RDMA_WRITE_WITH_IMM, .imm_data = htonl(j),
				.wr.rdma = { .remote_addr = in->remote_addr + j * stride,
					     .rkey = in->remote_rkey },
			}, *bad;

			/* Signalled once per round of slots: the send queue
			 * (send_depth >= 16) never fills. */
			if (j == SEAL_BW_SLOTS - 1 || posted + 1 == iters)
				wr.send_flags = IBV_SEND_SIGNALED;
			if (srdma_conn_seal(c, 1, src, size, out, stride, &n)) {
				fprintf(stderr, "%s: cannot seal\n", prog);
				goto out;
			}
			if (ibv_post_send(qp, &wr, &bad)) {
				fprintf(stderr, "%s: ibv_post_send (RDMA WRITE) failed\n", prog);
				goto out;
			}
			posted++;
		}
		int got = ibv_poll_cq(qp->send_cq, 16, wc);

		for (int i = 0; i < got; i++)
			if (wc[i].status != IBV_WC_SUCCESS) {
				fprintf(stderr, "%s: RDMA WRITE failed: %s\n", prog,
					ibv_wc_status_str(wc[i].status));
				goto out;
			}
		int back = ibv_poll_cq(qp->recv_cq, 16, wc);

		if (got < 0 || back < 0) {
			fprintf(stderr, "%s: poll error\n", prog);
			goto out;
		}
		for (int i = 0; i < back; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				fprintf(stderr, "%s: the server's slot return failed: %s\n", prog,
					ibv_wc_status_str(wc[i].status));
				goto out;
			}
			done++;
			if (srdma_conn_post_recv(c, (unsigned int)wc[i].wr_id))
				goto out;
		}
		if (!got && !back && now_us() > give_up) {
			fprintf(stderr, "%s: sealed RDMA WRITEs stalled for 60 s\n", prog);
			goto out;
		}
	}
	*secs = (now_us() - t0) / 1e6;
	rc = 0;
out:
	free(src);
	return rc;
}

/* The server's side of sealed bw: open each write in its slot, give the
 * slot back; until the client says BYE. */
static int serve_sealed_writes(struct srdma_conn *c, uint32_t size)
{
	const struct srdma_buf *w = srdma_conn_window(c);
	struct ibv_qp *qp = srdma_conn_qp(c);
	size_t stride = size + SRDMA_SEAL_OVERHEAD, n;
	unsigned long opened = 0;
	unsigned int spins = 0;
	struct ibv_wc wc[16], swc[16];
	struct srdma_err err;

	for (;;) {
		int got = ibv_poll_cq(qp->recv_cq, 16, wc);

		if (got < 0 || ibv_poll_cq(qp->send_cq, 16, swc) < 0)	/* slot returns */
			return 1;
		if (got == 0) {
			if (++spins % 4096 == 0) {
				int rc = srdma_conn_poll_ctrl(c, &err);

				if (rc)
					return rc == SRDMA_CLOSE_BYE ? 0 : 1;
			}
			continue;
		}
		for (int i = 0; i < got; i++) {
			uint32_t j = ntohl(wc[i].imm_data);
			struct ibv_sge sge = { .addr = (uintptr_t)srdma_conn_send_buf(c)->addr,
					       .length = 0, .lkey = srdma_conn_send_buf(c)->lkey };
			struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1,
						  .opcode = IBV_WR_SEND_WITH_IMM,
						  .imm_data = htonl(j) }, *bad;
			uint16_t kind;
			void *msg;

			if (wc[i].status != IBV_WC_SUCCESS ||
			    wc[i].opcode != IBV_WC_RECV_RDMA_WITH_IMM || j >= SEAL_BW_SLOTS) {
				fprintf(stderr, "%s: not a sealed write notification\n", prog);
				return 1;
			}
			if (srdma_conn_open(c, (uint8_t *)w->addr + j * stride, stride, &kind, &msg,
					    &n) || n != size) {
				srdma_conn_poll_ctrl(c, &err);
				fprintf(stderr, "%s: a sealed write did not open: %s\n", prog, err.msg);
				return 1;
			}
			opened++;
			if (opened % 8 == 0)
				wr.send_flags = IBV_SEND_SIGNALED;
			if (srdma_conn_post_recv(c, (unsigned int)wc[i].wr_id) ||
			    ibv_post_send(qp, &wr, &bad)) {
				fprintf(stderr, "%s: cannot return a slot\n", prog);
				return 1;
			}
		}
	}
}

static int run_bw(struct srdma_conn *c, const struct opts *o)
{
	unsigned long first = o->all ? 2 : o->size, last = o->all ? (1ul << 20) : o->size;
	const struct srdma_conn_info *in = srdma_conn_info(c);

	bool sealed = in->seal != SRDMA_SEAL_OFF;

	if (!o->host && sealed) {
		if (o->all) {
			fprintf(stderr, "%s: bw --seal measures one size (-s), not -A\n", prog);
			return 1;
		}
		return serve_sealed_writes(c, (uint32_t)o->size);
	}
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
		return rc == SRDMA_CLOSE_BYE ? 0 : 1;
	}
	if (sealed && o->all) {
		fprintf(stderr, "%s: bw --seal measures one size (-s), not -A\n", prog);
		return 1;
	}
	if (in->remote_len < (sealed ? SEAL_BW_SLOTS * (last + SRDMA_SEAL_OVERHEAD) : last)) {
		fprintf(stderr, "%s: the server's window is %" PRIu32 " bytes, less than %lu: "
			"run it with the same -s/-a\n", prog, in->remote_len, last);
		return 1;
	}
	if (!o->json)
		printf("%10s %10s %8s %14s %12s\n", "bytes", "iters", "depth", "MiB/s", "Mmsg/s");
	for (unsigned long size = first; size <= last; size *= 2) {
		double secs;

		if (sealed ? write_burst_sealed(c, (uint32_t)size, o->iters, &secs)
			   : write_burst(c, (uint32_t)size, o->iters, o->depth, &secs))
			return 1;
		double mib = (double)size * (double)o->iters / secs / (1024.0 * 1024.0);
		double mpps = (double)o->iters / secs / 1e6;

		if (o->json)
			printf("{\"mode\":\"bw\",\"bytes\":%lu,\"iters\":%lu,\"depth\":%lu,"
			       "\"seal\":\"%s\",\"mib_per_s\":%.2f,\"mmsg_per_s\":%.6f}\n", size,
			       o->iters, sealed ? (unsigned long)SEAL_BW_SLOTS : o->depth,
			       srdma_seal_name(in->seal), mib, mpps);
		else
			printf("%10lu %10lu %8lu %14.2f %12.6f\n", size, o->iters,
			       sealed ? (unsigned long)SEAL_BW_SLOTS : o->depth, mib, mpps);
		fflush(stdout);
		if (!o->all)
			break;
	}
	return 0;
}

/* The first client that reaches the listener: set up, or why not. */
static int accept_peer(struct srdma_listener *l, struct srdma_conn **c, struct srdma_err *err)
{
	for (;;) {
		struct pollfd p = { .fd = srdma_listener_fd(l), .events = POLLIN };
		const struct srdma_event *ev;
		int rc = srdma_listener_get_event(l, &ev);

		if (rc < 0) {
			snprintf(err->step, sizeof(err->step), "accept");
			snprintf(err->msg, sizeof(err->msg), "%s", strerror(-rc));
			return rc;
		}
		if (rc == 0) {
			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		if (ev->type == SRDMA_EVENT_CONNECTED) {
			*c = ev->conn;
			return 0;
		}
		*err = ev->err;
		return err->code ? err->code : -EPROTO;
	}
}

int pair_bench(const struct opts *o)
{
	struct srdma_conn *c = NULL;
	struct srdma_listener *l = NULL;	/* its device serves the connection */
	struct srdma_err err;
	size_t bufsz = o->all ? (1ul << 20) : (o->size < 64 ? 64 : o->size);
	int rc;

	/* Sealed, a message grows by SRDMA_SEAL_OVERHEAD; sealed bw's window
	 * holds SEAL_BW_SLOTS of them. */
	if (o->seal)
		bufsz = o->mode == BW ? SEAL_BW_SLOTS * (o->size + SRDMA_SEAL_OVERHEAD)
				      : bufsz + SRDMA_SEAL_OVERHEAD;

	if (o->host) {
		struct srdma_client_opts co;

		srdma_client_opts_init(&co);
		co.port = (uint16_t)o->port;
		co.ca_file = o->ca;
		co.rdma.dev_name = o->dev;
		co.rdma.buf_size = bufsz;
		co.rdma.send_depth = o->mode == BW ? (unsigned int)o->depth : 0;
		if (o->seal && co.rdma.send_depth && co.rdma.send_depth < SRDMA_SLOTS)
			co.rdma.send_depth = SRDMA_SLOTS;
		co.seal = o->seal;
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
		so.seal = o->seal;
		if (o->has_gid)
			so.rdma.gid_index = (int)o->gid;
		rc = srdma_listen(&so, &l, &err);
		if (!rc)
			rc = accept_peer(l, &c, &err);
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

