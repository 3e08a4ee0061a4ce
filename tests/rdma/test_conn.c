/*
 * Library-level RDMA tests: a server and a client in one process, on the
 * device's loopback (two QPs on one device). Needs an RDMA device.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
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
	const struct srdma_buf *b;
	struct ibv_sge sge;
	struct ibv_send_wr wr, *bad;
	struct ibv_wc wc;
	bool got_recv = false;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);

	b = srdma_conn_send_buf(c);
	memcpy(b->addr, msg, sizeof(msg));
	sge = (struct ibv_sge){ .addr = (uintptr_t)b->addr, .length = sizeof(msg), .lkey = b->lkey };
	wr = (struct ibv_send_wr){ .wr_id = 7, .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND,
				   .send_flags = IBV_SEND_SIGNALED };
	assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	assert_int_equal(srdma_conn_next_wc(c, 5000, &wc), 1);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
	while (!got_recv) {
		assert_int_equal(srdma_conn_next_wc(s, 5000, &wc), 1);
		assert_int_equal(wc.status, IBV_WC_SUCCESS);
		got_recv = wc.opcode == IBV_WC_RECV;
	}
	assert_int_equal(wc.byte_len, sizeof(msg));
	assert_memory_equal((char *)srdma_conn_recv_buf(s)->addr +
			    wc.wr_id * srdma_conn_buf_size(s), msg, sizeof(msg));

	/* The client's BYE reaches the server's control channel. */
	srdma_conn_close(c, 0, NULL);
	for (int i = 0; i < 50; i++) {
		int rc = srdma_conn_poll_ctrl(s, &err);

		if (rc) {
			assert_int_equal(rc, 1);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(psns_in_effect_and_fresh_per_connection),
		cmocka_unit_test(send_crosses_the_qp),
		cmocka_unit_test(exporter_mode_psns_agree_and_are_in_effect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
