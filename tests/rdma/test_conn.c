/*
 * Library-level RDMA tests: a server and a client in one process, on the
 * device's loopback (two QPs on one device). Needs an RDMA device.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "pair.h"

/* What the device holds for qp must be what the handshake negotiated. */
static void assert_qp_holds(struct srdma_conn *mine, struct srdma_conn *peer)
{
	const struct srdma_conn_info *m = srdma_conn_info(mine), *p = srdma_conn_info(peer);
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;

	assert_int_equal(ibv_query_qp(srdma_conn_qp(mine), &a, IBV_QP_STATE | IBV_QP_RQ_PSN |
				      IBV_QP_SQ_PSN | IBV_QP_DEST_QPN, &ia), 0);
	assert_int_equal(a.qp_state, IBV_QPS_RTS);
	/* Ours sends from our PSN; receives from the peer's. The peer-binding
	 * message (one packet each way) has used one PSN in each direction. */
	assert_int_equal(a.sq_psn, (m->local_psn + 1) & SRDMA_PSN_MASK);
	assert_int_equal(a.rq_psn, (p->local_psn + 1) & SRDMA_PSN_MASK);
	assert_int_equal(a.dest_qp_num, p->local_qpn);
	assert_int_equal(m->remote_psn, p->local_psn);
	assert_int_equal(m->remote_qpn, p->local_qpn);
	assert_int_equal(srdma_conn_qp(mine)->qp_num, m->local_qpn);
}

/* The setup's phases were measured, and fit inside its total. */
static void assert_times_add_up(struct srdma_conn *conn, bool client)
{
	const struct srdma_setup_times *t = &srdma_conn_info(conn)->times;
	uint64_t parts = (uint64_t)t->tcp_us + t->tls_us + t->params_us + t->qp_create_us +
			 t->qp_connect_us + t->binding_us;

	assert_true(t->tls_us > 0);
	assert_true(t->qp_create_us > 0);
	assert_true(t->qp_connect_us > 0);
	assert_true(t->binding_us > 0);
	assert_true(client ? t->tcp_us > 0 : t->tcp_us == 0);
	assert_true(parts <= t->total_us);
	/* Nothing but bookkeeping between the phases: a unit mix-up (ms for
	 * us) would show here; a preempted thread gets a generous second. */
	assert_true(t->total_us - parts < 1000000);
	assert_int_equal(srdma_conn_info(conn)->tls_resumed, 0);
}

static void psns_in_effect_and_fresh_per_connection(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s[2], *c[2];
	uint32_t psn[4];

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	for (int i = 0; i < 2; i++) {
		pair_connect(l, SRDMA_PSN_EXCHANGE, &s[i], &c[i]);
		assert_qp_holds(s[i], c[i]);
		assert_qp_holds(c[i], s[i]);
		assert_string_equal(srdma_conn_info(c[i])->tls_version, "TLSv1.3");
		assert_times_add_up(s[i], false);
		assert_times_add_up(c[i], true);
		psn[2 * i] = srdma_conn_info(s[i])->local_psn;
		psn[2 * i + 1] = srdma_conn_info(c[i])->local_psn;
	}
	/* Four independent 24-bit draws: equal ones would mean a broken
	 * generator (chance of a false failure: ~6 in 2^24). */
	for (int i = 0; i < 4; i++)
		for (int j = i + 1; j < 4; j++)
			assert_int_not_equal(psn[i], psn[j]);
	for (int i = 0; i < 2; i++) {
		srdma_conn_close(c[i], 0, NULL);
		srdma_conn_close(s[i], 0, NULL);
	}
	srdma_listener_free(l);
}

static void send_crosses_the_qp(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	struct srdma_err err;
	static const char msg[] = "over RDMA";
	struct ibv_wc wc;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);

	pair_send(c, s, msg, sizeof(msg), &wc);
	assert_int_equal(wc.byte_len, sizeof(msg));
	assert_memory_equal((char *)srdma_conn_recv_buf(s)->addr +
			    wc.wr_id * srdma_conn_buf_size(s), msg, sizeof(msg));

	/* The client's BYE reaches the server's control channel. */
	srdma_conn_close(c, 0, NULL);
	for (int i = 0; i < 50; i++) {
		int rc = srdma_conn_poll_ctrl(s, &err);

		if (rc) {
			assert_int_equal(rc, SRDMA_CLOSE_BYE);
			assert_string_equal(err.msg, "bye");
			break;
		}
		usleep(20000);
		assert_true(i < 49);
	}
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
}

static void exporter_mode_psns_agree_and_are_in_effect(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXPORTER);
	pair_connect(l, SRDMA_PSN_EXPORTER, &s, &c);
	assert_int_equal(srdma_conn_info(s)->psn_mode, SRDMA_PSN_EXPORTER);
	assert_int_equal(srdma_conn_info(c)->psn_mode, SRDMA_PSN_EXPORTER);
	/* Derived independently on each side, yet the same pair. */
	assert_qp_holds(s, c);
	assert_qp_holds(c, s);
	assert_int_not_equal(srdma_conn_info(s)->local_psn, srdma_conn_info(c)->local_psn);
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Calls srdma_conn_poll_ctrl() on c as a program's loop would (on its
 * timer), for up to ms; returns what ended it (0: nothing did). */
static int serve_ctrl_for(struct srdma_conn *c, int ms, struct srdma_err *err)
{
	for (int waited = 0; waited < ms; waited += 10) {
		int rc = srdma_conn_poll_ctrl(c, err);

		if (rc)
			return rc;
		usleep(10000);
	}
	return 0;
}

/* Liveness lives in the library: a peer that answers nothing (here a client
 * whose program never serves its control channel, as a hung process) is
 * declared dead after peer_timeout_ms; one that answers (the control) is
 * not, however long it idles. */
static void silent_peer_is_declared_dead(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	struct srdma_err err;
	int64_t t0;
	int rc, polls = 0;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.peer_timeout_ms = 600;
	l = pair_listen_opts(&so);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);

	/* Control: both sides served, 2 s idle: nothing ends. */
	for (int i = 0; i < 200; i++) {
		assert_int_equal(srdma_conn_poll_ctrl(s, &err), 0);
		assert_int_equal(srdma_conn_poll_ctrl(c, &err), 0);
		assert_true(srdma_conn_ctrl_timeout_ms(s) >= 0);
		assert_true(srdma_conn_ctrl_timeout_ms(s) <= 600);
		usleep(10000);
	}
	/* The client's side goes quiet: the server gives up on it. */
	t0 = now_ms();
	for (;;) {
		int wait = srdma_conn_ctrl_timeout_ms(s);

		assert_true(wait >= 0 && wait <= 600);
		usleep((useconds_t)wait * 1000);
		polls++;
		rc = srdma_conn_poll_ctrl(s, &err);
		if (rc)
			break;
		assert_true(now_ms() - t0 < 5000);
	}
	print_message("declared dead after %lld ms (%d polls): %s\n",
		      (long long)(now_ms() - t0), polls, err.msg);
	assert_int_equal(rc, SRDMA_CLOSE_TIMEOUT);
	assert_int_equal(err.code, -ETIMEDOUT);
	assert_true(now_ms() - t0 >= 400);
	/* Ended is ended: a second poll says the same, timer off. */
	memset(&err, 0, sizeof(err));
	assert_int_equal(srdma_conn_poll_ctrl(s, &err), SRDMA_CLOSE_TIMEOUT);
	assert_int_equal(err.code, -ETIMEDOUT);
	assert_int_equal(srdma_conn_ctrl_timeout_ms(s), -1);
	srdma_conn_close(s, SRDMA_ERROR_NOT_RESPONDING, NULL);
	/* The client hears why when it looks. */
	rc = serve_ctrl_for(c, 2000, &err);
	assert_int_equal(rc, SRDMA_CLOSE_ERROR);
	assert_int_equal(err.code, -ECONNABORTED);
	assert_int_equal(err.peer_code, SRDMA_ERROR_NOT_RESPONDING);
	srdma_conn_close(c, 0, NULL);
	srdma_listener_free(l);
}

static bool channel_readable(struct srdma_conn *c, int ms)
{
	struct pollfd p = { .fd = srdma_conn_channel(c)->fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

/* Send n 8-byte SENDs from c and wait until each is acknowledged (so each
 * has landed in the peer's receive queue). */
static void send_and_wait(struct srdma_conn *c, int n)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = 8, .lkey = b->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct ibv_wc wc;

	for (int i = 0; i < n; i++)
		assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(srdma_conn_next_wc(c, 5000, &wc), 1);
		assert_int_equal(wc.status, IBV_WC_SUCCESS);
	}
}

/* srdma_conn_poll_wc() takes at most max, and leaves the CQs unarmed while
 * more may wait, so a loop comes back when it chooses (after the others'
 * turns), not when the channel says; drained, it arms them again. */
static void poll_wc_takes_bounded_batches(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	struct ibv_wc wc[5];

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	send_and_wait(c, 12);
	assert_true(channel_readable(s, 2000));
	assert_int_equal(srdma_conn_poll_wc(s, wc, 5), 5);	/* 7 left */
	for (int i = 0; i < 5; i++)
		assert_int_equal(wc[i].opcode, IBV_WC_RECV);
	/* Unarmed: a new arrival raises no event. */
	send_and_wait(c, 1);
	assert_false(channel_readable(s, 300));
	assert_int_equal(srdma_conn_poll_wc(s, wc, 5), 5);	/* 3 left */
	assert_int_equal(srdma_conn_poll_wc(s, wc, 5), 3);	/* drained: armed */
	/* Armed: the next arrival wakes the channel. */
	send_and_wait(c, 1);
	assert_true(channel_readable(s, 2000));
	assert_int_equal(srdma_conn_poll_wc(s, wc, 5), 1);
	assert_int_equal(srdma_conn_poll_wc(s, wc, 0), -EINVAL);
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
}

/* An address vector holds GID indexes 0..255: a larger one is refused,
 * not cut to another GID. Control: index 0 opens. */
static void gid_index_beyond_255_refused(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l = NULL;
	struct srdma_err err;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.rdma.gid_index = 256;
	assert_int_equal(srdma_listen(&so, &l, &err), -EINVAL);
	assert_null(l);
	print_message("gid 256: %s: %s\n", err.step, err.msg);
	assert_non_null(strstr(err.msg, "0..255"));
	so.rdma.gid_index = 0;
	assert_int_equal(srdma_listen(&so, &l, &err), 0);
	srdma_listener_free(l);
}

/* A program waiting in srdma_conn_next_wc() learns that its peer left, and
 * srdma_conn_poll_ctrl() says how: BYE, or lost (the TCP connection cut
 * without a word, as when the peer's process is killed). Without the
 * control channel in its wait, next_wc would sleep out its timeout. */
static void next_wc_ends_when_the_peer_leaves(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	struct srdma_err err;
	struct ibv_wc wc;
	int64_t t0;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	srdma_conn_close(c, 0, NULL);
	t0 = now_ms();
	assert_int_equal(srdma_conn_next_wc(s, 20000, &wc), -ENOTCONN);
	assert_true(now_ms() - t0 < 10000);
	assert_int_equal(srdma_conn_poll_ctrl(s, &err), SRDMA_CLOSE_BYE);
	srdma_conn_close(s, 0, NULL);

	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	shutdown(srdma_conn_ctrl_fd(c), SHUT_RDWR);
	t0 = now_ms();
	assert_int_equal(srdma_conn_next_wc(s, 20000, &wc), -ENOTCONN);
	assert_true(now_ms() - t0 < 10000);
	assert_int_equal(srdma_conn_poll_ctrl(s, &err), SRDMA_CLOSE_LOST);
	print_message("lost: %s: %s\n", err.step, err.msg);
	srdma_conn_close(s, 0, NULL);
	srdma_conn_close(c, 0, NULL);
	srdma_listener_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(psns_in_effect_and_fresh_per_connection),
		cmocka_unit_test(send_crosses_the_qp),
		cmocka_unit_test(exporter_mode_psns_agree_and_are_in_effect),
		cmocka_unit_test(silent_peer_is_declared_dead),
		cmocka_unit_test(poll_wc_takes_bounded_batches),
		cmocka_unit_test(gid_index_beyond_255_refused),
		cmocka_unit_test(next_wc_ends_when_the_peer_leaves),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
