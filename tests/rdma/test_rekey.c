/*
 * Rekeying, make before break (srdma_conn_rekey()): numbered messages flow
 * both ways while the connection moves to fresh QPs, 20 times, started by
 * either side; none may be lost, duplicated or reordered, the QPNs must
 * change and the new QP must hold the new PSNs. Sealed and unsealed. Both
 * ends run in this one thread: each wait drives both connections. Also:
 * back-to-back rekeys (an OFFER that comes while the old QP still
 * retires), and that rekeying needs both sides to opt in, against a peer
 * that sends REKEY anyway.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "pair.h"
#include "srdma_internal.h"

#define INBOX 32

struct end {
	struct srdma_conn *c;
	struct ibv_wc inbox[INBOX];	/* receives, in the order taken */
	int n;
	unsigned long sends_done;
};

/* back_to_back_rekeys(): each end offers the next rekey as soon as it is
 * done with the last, until this epoch (0: never). */
static uint32_t eager_until;

/* Take what completed on e (receives into its inbox), serve its control
 * channel. */
static void drive(struct end *e)
{
	struct ibv_wc wc[8];
	struct srdma_err err;
	int n = srdma_conn_poll_wc(e->c, wc, 8);

	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		if (wc[i].status != IBV_WC_SUCCESS)
			fail_msg("a completion failed: %s (wr_id %llu)",
				 ibv_wc_status_str(wc[i].status), (unsigned long long)wc[i].wr_id);
		if (wc[i].opcode & IBV_WC_RECV) {
			assert_true(e->n < INBOX);
			e->inbox[e->n++] = wc[i];
		} else {
			e->sends_done++;
		}
	}
	if (srdma_conn_poll_ctrl(e->c, &err))
		fail_msg("the connection ended: %s: %s", err.step, err.msg);
	if (!srdma_conn_rekeying(e->c) && srdma_conn_info(e->c)->epoch < eager_until) {
		int rc = srdma_conn_rekey(e->c, &err);

		if (rc && rc != -EBUSY)
			fail_msg("rekey: %s: %s", err.step, err.msg);
	}
}

/* Until `to` has a receive (driving both ends), then take it: its bytes
 * (opened, sealed) must be the message numbered want. */
static void expect_msg(struct end *to, struct end *other, uint32_t want, bool sealed)
{
	struct ibv_wc wc;
	uint8_t *p;
	size_t len;
	uint32_t got;

	for (int spins = 0; to->n == 0; spins++) {
		drive(to);
		drive(other);
		assert_true(spins < 2000000);
	}
	wc = to->inbox[0];
	memmove(to->inbox, to->inbox + 1, (size_t)--to->n * sizeof(wc));
	p = (uint8_t *)srdma_conn_recv_buf(to->c)->addr + wc.wr_id * srdma_conn_buf_size(to->c);
	len = wc.byte_len;
	if (sealed) {
		uint16_t kind;
		void *msg;

		assert_int_equal(srdma_conn_open(to->c, p, len, &kind, &msg, &len), 0);
		p = msg;
	}
	assert_int_equal(len, 4);
	memcpy(&got, p, 4);
	if (ntohl(got) != want)
		fail_msg("message %u arrived where %u was due (lost, duplicated or reordered)",
			 ntohl(got), want);
	assert_int_equal(srdma_conn_post_recv(to->c, (unsigned int)wc.wr_id), 0);
}

/* Message number k from e, on its QP as it is now. */
static void send_msg(struct end *e, uint32_t k, bool sealed)
{
	const struct srdma_buf *b = srdma_conn_send_buf(e->c);
	uint32_t be = htonl(k);
	size_t len = 4;
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .lkey = b->lkey };
	struct ibv_send_wr wr = { .wr_id = k, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;

	/* Slot k % 8 of the send buffer: never one still in flight. */
	sge.addr += (k % 8) * srdma_conn_buf_size(e->c);
	if (sealed)
		assert_int_equal(srdma_conn_seal(e->c, 1, &be, 4, (void *)(uintptr_t)sge.addr,
						 srdma_conn_buf_size(e->c), &len), 0);
	else
		memcpy((void *)(uintptr_t)sge.addr, &be, 4);
	sge.length = (uint32_t)len;
	assert_int_equal(ibv_post_send(srdma_conn_qp(e->c), &wr, &bad), 0);
}

static void assert_qp_holds_info(struct srdma_conn *c)
{
	const struct srdma_conn_info *i = srdma_conn_info(c);
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;

	assert_int_equal(srdma_conn_qp(c)->qp_num, i->local_qpn);
	assert_int_equal(ibv_query_qp(srdma_conn_qp(c), &a, IBV_QP_STATE | IBV_QP_DEST_QPN |
				      IBV_QP_RQ_PSN | IBV_QP_SQ_PSN, &ia), 0);
	assert_int_equal(a.qp_state, IBV_QPS_RTS);
	assert_int_equal(a.dest_qp_num, i->remote_qpn);
}

static void run(int seal)
{
	struct srdma_listener *l;
	struct end s = { 0 }, c = { 0 };
	const int rekeys = 20, per_rekey = 6;
	uint32_t k_c = 0, k_s = 0, qpns[21];
	struct srdma_err err;
	bool sealed = seal != 0;

	pair_seal = seal;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s.c, &c.c);
	qpns[0] = srdma_conn_info(c.c)->local_qpn;
	for (int r = 0; r < rekeys; r++) {
		struct end *who = r % 2 ? &s : &c;
		uint32_t epoch = srdma_conn_info(c.c)->epoch;

		assert_int_equal(srdma_conn_rekey(who->c, &err), 0);
		assert_int_equal(srdma_conn_rekey(who->c, &err), -EBUSY);
		/* Traffic both ways, a few messages in flight at once, while
		 * the rekey runs; until both ends have finished it. */
		for (int m = 0; m < per_rekey || srdma_conn_rekeying(s.c) ||
				srdma_conn_rekeying(c.c); m++) {
			assert_true(m < 10000);
			send_msg(&c, k_c, sealed);
			send_msg(&c, k_c + 1, sealed);
			send_msg(&s, k_s, sealed);
			expect_msg(&s, &c, k_c++, sealed);
			expect_msg(&s, &c, k_c++, sealed);
			expect_msg(&c, &s, k_s++, sealed);
		}
		assert_int_equal(srdma_conn_info(c.c)->epoch, epoch + 1);
		assert_int_equal(srdma_conn_info(s.c)->epoch, epoch + 1);
		qpns[r + 1] = srdma_conn_info(c.c)->local_qpn;
		assert_int_not_equal(qpns[r + 1], qpns[r]);
		assert_int_equal(srdma_conn_info(s.c)->remote_qpn, qpns[r + 1]);
		assert_qp_holds_info(c.c);
		assert_qp_holds_info(s.c);
	}
	print_message("%s: %d rekeys, %u + %u messages in order, none lost or doubled; "
		      "client QPNs 0x%x -> 0x%x -> ... -> 0x%x\n", sealed ? "sealed" : "unsealed",
		      rekeys, k_c, k_s, qpns[0], qpns[1], qpns[rekeys]);
	srdma_conn_close(c.c, 0, NULL);
	srdma_conn_close(s.c, 0, NULL);
	srdma_listener_free(l);
	pair_seal = 0;
}

static void rekeys_lose_nothing(void **state)
{
	(void)state;
	run(0);
}

static void sealed_rekeys_lose_nothing(void **state)
{
	(void)state;
	run(SRDMA_SEAL_AES_256_GCM);
}

/* Both sides offer at once: the server's offer stands, one rekey runs. */
static void both_offer_at_once(void **state)
{
	struct srdma_listener *l;
	struct end s = { 0 }, c = { 0 };
	struct srdma_err err;
	uint32_t k = 0;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s.c, &c.c);
	assert_int_equal(srdma_conn_rekey(c.c, &err), 0);
	assert_int_equal(srdma_conn_rekey(s.c, &err), 0);
	while (srdma_conn_rekeying(s.c) || srdma_conn_rekeying(c.c)) {
		send_msg(&c, k, false);
		expect_msg(&s, &c, k++, false);
		assert_true(k < 10000);
	}
	assert_int_equal(srdma_conn_info(c.c)->epoch, 1);
	assert_int_equal(srdma_conn_info(s.c)->epoch, 1);
	send_msg(&s, 7, false);
	expect_msg(&c, &s, 7, false);
	srdma_conn_close(c.c, 0, NULL);
	srdma_conn_close(s.c, 0, NULL);
	srdma_listener_free(l);
}

/*
 * Each side offers the next rekey the moment it has finished the last, so
 * that the one done first offers while the other still retires its old QP
 * (the OFFER waits, queued, for that). Checked with the queue removed
 * (rekey.c, srdma_rekey_on_msg(): the RK_SWITCHED branch): the connection
 * then ends with "an OFFER while a rekey is in progress".
 */
static void back_to_back_rekeys(void **state)
{
	struct srdma_listener *l;
	struct end s = { 0 }, c = { 0 };
	uint32_t k_c = 0, k_s = 0;
	const uint32_t want = 12;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s.c, &c.c);
	eager_until = want;
	for (int m = 0; srdma_conn_info(c.c)->epoch < want || srdma_conn_rekeying(s.c) ||
			srdma_conn_rekeying(c.c); m++) {
		assert_true(m < 20000);
		drive(&c);
		drive(&s);
		send_msg(&c, k_c, false);
		send_msg(&s, k_s, false);
		expect_msg(&s, &c, k_c++, false);
		expect_msg(&c, &s, k_s++, false);
	}
	eager_until = 0;
	assert_true(srdma_conn_info(c.c)->epoch >= want);
	assert_int_equal(srdma_conn_info(s.c)->epoch, srdma_conn_info(c.c)->epoch);
	assert_qp_holds_info(c.c);
	assert_qp_holds_info(s.c);
	print_message("back to back: %u rekeys, %u + %u messages in order\n",
		      srdma_conn_info(c.c)->epoch, k_c, k_s);
	srdma_conn_close(c.c, 0, NULL);
	srdma_conn_close(s.c, 0, NULL);
	srdma_listener_free(l);
}

/* A REKEY OFFER sent over c's control channel whatever its HELLO said: a
 * peer that would move the other side's QP. */
static void send_raw_offer(struct srdma_conn *c)
{
	struct srdma_msg m = { .type = SRDMA_MSG_REKEY };
	struct srdma_err err;

	m.u.rekey.phase = SRDMA_REKEY_OFFER;
	m.u.rekey.qpn = srdma_conn_qp(c)->qp_num;
	m.u.rekey.psn = 0x123456;
	assert_int_equal(srdma_ctrl_send(c, &m, srdma_now_ms() + 2000, &err), 0);
}

/* s's answer to a raw OFFER: the poll_ctrl result once it has come. */
static int offer_to(struct srdma_conn *s, struct srdma_conn *c, struct srdma_err *err)
{
	int rc = 0;

	send_raw_offer(c);
	for (int64_t t = srdma_now_ms() + 2000; !rc && srdma_now_ms() < t &&
	     !srdma_conn_rekeying(s);)
		rc = srdma_conn_poll_ctrl(s, err);
	return rc;
}

/*
 * Rekeying replaces the QP srdma_conn_qp() returns, so a program that did
 * not opt in (one that keeps the QP pointer, as 0.4 allowed) must never be
 * rekeyed: srdma_conn_rekey() is refused on both ends when either did not
 * opt in, and a REKEY from a peer that sends one anyway ends the
 * connection, its QP untouched. Control: the same OFFER to a server that
 * opted in is taken (it starts to move to a new QP).
 */
static void rekeying_needs_both_to_opt_in(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	struct srdma_err err;
	struct ibv_qp *qp;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.rekey = 0;		/* the client (pair_rekey) opts in */
	l = pair_listen_opts(&so);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	assert_int_equal(srdma_conn_rekey(c, &err), -EOPNOTSUPP);
	assert_int_equal(srdma_conn_rekey(s, &err), -EOPNOTSUPP);
	qp = srdma_conn_qp(s);
	assert_int_equal(offer_to(s, c, &err), SRDMA_CLOSE_PROTOCOL);
	assert_non_null(strstr(err.msg, "did not offer"));
	assert_false(srdma_conn_rekeying(s));
	assert_ptr_equal(srdma_conn_qp(s), qp);
	print_message("a REKEY to a server that did not opt in: refused (%s)\n", err.msg);
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);

	/* Control: opted in, the same OFFER is taken. */
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	assert_int_equal(offer_to(s, c, &err), 0);
	assert_true(srdma_conn_rekeying(s));
	print_message("control: the same OFFER to a server that opted in is taken\n");
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rekeys_lose_nothing),
		cmocka_unit_test(sealed_rekeys_lose_nothing),
		cmocka_unit_test(both_offer_at_once),
		cmocka_unit_test(back_to_back_rekeys),
		cmocka_unit_test(rekeying_needs_both_to_opt_in),
	};

	pair_rekey = 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
