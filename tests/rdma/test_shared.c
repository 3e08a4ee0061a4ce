/*
 * Shared mode (srdma_server_opts.srq_slots): one receive pool and one
 * completion fd for every connection of a listener, each client's write
 * window still its own. Server and clients in one process, on the
 * device's loopback. Needs an RDMA device.
 *
 * The security cases each run a control: the same attack against the
 * design the memory window replaces (srdma_window_fault = 1: the window's
 * MR exposed with its own rkey on the shared PD) succeeds.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "pair.h"
#include "srdma_internal.h"

#define SLOTS 32

static struct srdma_listener *listen_shared(void)
{
	struct srdma_server_opts so;

	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.srq_slots = SLOTS;
	return pair_listen_opts(&so);
}

/* The next completion of the listener's connections (5 s at most). */
static void next_shared(struct srdma_listener *l, struct srdma_wc *wc)
{
	for (int i = 0; i < 500; i++) {
		struct pollfd p = { .fd = srdma_listener_wc_fd(l), .events = POLLIN };
		int n = srdma_listener_poll_wc(l, wc, 1);

		assert_true(n >= 0);
		if (n == 1)
			return;
		poll(&p, 1, 10);
	}
	fail_msg("no completion on the shared completion fd in 5 s");
}

/* A SEND from client c of msg: its send completion taken. */
static void client_send(struct srdma_conn *c, const char *msg)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	size_t len = strlen(msg) + 1;
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = (uint32_t)len,
			       .lkey = b->lkey };
	struct ibv_send_wr wr = { .wr_id = 100, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct ibv_wc wc;

	memcpy(b->addr, msg, len);
	assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	assert_int_equal(srdma_conn_next_wc(c, 5000, &wc), 1);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
}

/* An RDMA WRITE of msg from client c to (addr, rkey): the completion's
 * status (a refused write fails the client's QP). */
static enum ibv_wc_status client_write(struct srdma_conn *c, uint64_t addr, uint32_t rkey,
				       const char *msg)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	size_t len = strlen(msg) + 1;
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = (uint32_t)len,
			       .lkey = b->lkey };
	struct ibv_send_wr wr = { .wr_id = 200, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_RDMA_WRITE, .send_flags = IBV_SEND_SIGNALED,
				  .wr.rdma = { .remote_addr = addr, .rkey = rkey } }, *bad;
	struct ibv_wc wc;

	memcpy(b->addr, msg, len);
	assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	assert_int_equal(srdma_conn_next_wc(c, 10000, &wc), 1);
	return wc.status;
}

static void completions_are_routed_to_their_connection(void **state)
{
	struct srdma_listener *l = listen_shared();
	struct srdma_conn *s[3], *c[3];
	const char *msgs[3] = { "from A", "from B", "from C" };
	struct srdma_wc wc;

	(void)state;
	for (int i = 0; i < 3; i++) {
		pair_connect(l, SRDMA_PSN_EXCHANGE, &s[i], &c[i]);
		srdma_conn_set_context(s[i], &msgs[i]);
		/* What shared mode changes about a connection. */
		assert_int_equal(srdma_conn_send_buf(s[i])->len, 0);
		assert_null(srdma_conn_channel(s[i]));
		assert_int_equal(srdma_conn_poll_wc(s[i], &wc.wc, 1), -EOPNOTSUPP);
		assert_int_equal(srdma_conn_recv_buf(s[i])->len, (size_t)SLOTS * 4096);
	}
	assert_ptr_equal(srdma_conn_recv_buf(s[0])->addr, srdma_conn_recv_buf(s[1])->addr);
	assert_true(srdma_listener_wc_fd(l) >= 0);

	/* B first, then A: each arrives with its own connection. */
	for (int round = 0; round < 3; round++) {
		for (int i = 1; i >= 0; i--) {
			unsigned int slot;

			client_send(c[i], msgs[i]);
			next_shared(l, &wc);
			assert_ptr_equal(wc.conn, s[i]);
			assert_ptr_equal(srdma_conn_context(wc.conn), &msgs[i]);
			assert_int_equal(wc.wc.status, IBV_WC_SUCCESS);
			assert_int_equal(wc.wc.opcode, IBV_WC_RECV);
			assert_true(wc.wc.wr_id < SLOTS);
			slot = (unsigned int)wc.wc.wr_id;
			assert_string_equal((char *)srdma_conn_recv_buf(s[i])->addr + slot * 4096,
					    msgs[i]);
			/* The other connection cannot give this slot back. */
			assert_int_equal(srdma_conn_post_recv(s[1 - i], slot), -EINVAL);
			assert_int_equal(srdma_conn_post_recv(s[i], slot), 0);
			/* Given back once: a second time is refused. */
			assert_int_equal(srdma_conn_post_recv(s[i], slot), -EINVAL);
		}
	}
	assert_int_equal(srdma_conn_post_recv(s[0], SLOTS), -EINVAL);

	/* A closes while it holds a slot: the slot goes back to the pool, so
	 * B and C can hold all SLOTS slots at once afterwards (SRDMA_SLOTS
	 * each, the most one connection may hold). */
	client_send(c[0], "held");
	next_shared(l, &wc);
	assert_ptr_equal(wc.conn, s[0]);
	srdma_conn_close(c[0], 0, NULL);
	srdma_conn_close(s[0], 0, NULL);
	for (int i = 1; i < 3; i++)
		for (int k = 0; k < SLOTS / 2; k++)
			client_send(c[i], "fill");
	for (int i = 0; i < SLOTS; i++) {
		next_shared(l, &wc);
		assert_true(wc.conn == s[1] || wc.conn == s[2]);
		assert_int_equal(wc.wc.status, IBV_WC_SUCCESS);
	}
	for (int i = 1; i < 3; i++) {
		srdma_conn_close(c[i], 0, NULL);
		srdma_conn_close(s[i], 0, NULL);
	}
	srdma_listener_free(l);
}

/* B's QP writes with A's live window rkey and address. */
static enum ibv_wc_status cross_write(struct srdma_listener *l, char *seen, size_t seen_len)
{
	struct srdma_conn *s[2], *c[2];
	const struct srdma_conn_info *a;
	enum ibv_wc_status st;

	for (int i = 0; i < 2; i++)
		pair_connect(l, SRDMA_PSN_EXCHANGE, &s[i], &c[i]);
	a = srdma_conn_info(c[0]);
	/* Control: A writes its own window. */
	assert_int_equal(client_write(c[0], a->remote_addr, a->remote_rkey, "A's own"),
			 IBV_WC_SUCCESS);
	assert_string_equal(srdma_conn_window(s[0])->addr, "A's own");
	/* And B's QP works: it writes its own. */
	assert_int_equal(client_write(c[1], srdma_conn_info(c[1])->remote_addr,
				      srdma_conn_info(c[1])->remote_rkey, "B's own"),
			 IBV_WC_SUCCESS);
	assert_string_equal(srdma_conn_window(s[1])->addr, "B's own");
	st = client_write(c[1], a->remote_addr, a->remote_rkey, "B was here");
	snprintf(seen, seen_len, "%s", (char *)srdma_conn_window(s[0])->addr);
	for (int i = 0; i < 2; i++) {
		srdma_conn_close(c[i], 0, NULL);
		srdma_conn_close(s[i], 0, NULL);
	}
	return st;
}

static void a_window_is_its_own_qps(void **state)
{
	struct srdma_listener *l;
	enum ibv_wc_status st;
	char seen[64];

	(void)state;
	/* Control, the defence removed: with the window's MR on the shared
	 * PD exposed by its own rkey, B writes A's window. */
	srdma_window_fault = 1;
	l = listen_shared();
	st = cross_write(l, seen, sizeof(seen));
	srdma_listener_free(l);
	srdma_window_fault = 0;
	printf("control (MR rkey on the shared PD): B's write: %s; A's window: \"%s\"\n",
	       ibv_wc_status_str(st), seen);
	assert_int_equal(st, IBV_WC_SUCCESS);
	assert_string_equal(seen, "B was here");

	/* The defence: a type 2 memory window bound to A's QP. */
	l = listen_shared();
	st = cross_write(l, seen, sizeof(seen));
	srdma_listener_free(l);
	printf("attack (memory window): B's write: %s; A's window: \"%s\"\n",
	       ibv_wc_status_str(st), seen);
	assert_int_not_equal(st, IBV_WC_SUCCESS);
	assert_string_equal(seen, "A's own");
}

static void a_closed_windows_rkey_is_dead(void **state)
{
	struct srdma_listener *l = listen_shared();
	struct srdma_conn *s[2], *c[2];
	uint64_t addr;
	uint32_t rkey;

	(void)state;
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s[0], &c[0]);
	addr = srdma_conn_info(c[0])->remote_addr;
	rkey = srdma_conn_info(c[0])->remote_rkey;
	/* Control: the rkey works while A is connected. */
	assert_int_equal(client_write(c[0], addr, rkey, "live"), IBV_WC_SUCCESS);
	srdma_conn_close(c[0], 0, NULL);
	srdma_conn_close(s[0], 0, NULL);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s[1], &c[1]);
	if (srdma_conn_info(c[1])->remote_rkey == rkey)
		fail_msg("B was given A's old rkey again (a 1 in 256 chance): run again");
	assert_int_not_equal(client_write(c[1], addr, rkey, "stale"), IBV_WC_SUCCESS);
	srdma_conn_close(c[1], 0, NULL);
	srdma_conn_close(s[1], 0, NULL);
	srdma_listener_free(l);
}

/* A SEND from c: its completion's status, or -1 when none came in ms
 * (the server had no receive for it: RNR retries for ever). */
static int try_send(struct srdma_conn *c, const char *msg, int ms)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = (uint32_t)strlen(msg) + 1,
			       .lkey = b->lkey };
	struct ibv_send_wr wr = { .wr_id = 300, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct ibv_wc wc;

	memcpy(b->addr, msg, strlen(msg) + 1);
	assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	return srdma_conn_next_wc(c, ms, &wc) == 1 ? (int)wc.status : -1;
}

/* A sends `count` messages that the program keeps (never reposted); the
 * program takes every completion meanwhile. Returns whether B can still
 * send (its SEND completes within 3 s); *overrun: A was reported. */
static bool b_served_beside_a_hoarder(unsigned int count, bool *overrun)
{
	struct srdma_listener *l = listen_shared();
	struct srdma_conn *s[2], *c[2];
	struct srdma_wc wc[8];
	bool served;
	int st;

	*overrun = false;
	for (int i = 0; i < 2; i++)
		pair_connect(l, SRDMA_PSN_EXCHANGE, &s[i], &c[i]);
	for (unsigned int i = 0; i < count; i++) {
		if (try_send(c[0], "hoard", 3000) != IBV_WC_SUCCESS)
			break;	/* A's QP was failed */
		for (int n; (n = srdma_listener_poll_wc(l, wc, 8)) > 0;)
			for (int k = 0; k < n; k++)
				if (wc[k].conn == s[0] && wc[k].wc.wr_id == SRDMA_WR_ID_OVERRUN)
					*overrun = true;
	}
	st = try_send(c[1], "B", 3000);
	served = st == IBV_WC_SUCCESS;
	printf("A sent up to %u messages that are kept: A reported %s; B's SEND: %s\n", count,
	       *overrun ? "yes" : "no", st < 0 ? "no completion in 3 s" : ibv_wc_status_str(st));
	/* A leaves: its slots go back, and B's SEND (if it waits) lands. */
	srdma_conn_close(c[0], 0, NULL);
	srdma_conn_close(s[0], 0, NULL);
	srdma_conn_close(c[1], 0, NULL);
	srdma_conn_close(s[1], 0, NULL);
	srdma_listener_free(l);
	return served;
}

static void a_client_cannot_keep_the_pool(void **state)
{
	bool overrun, served;

	(void)state;
	/* Control, the bound removed: A takes all SLOTS slots, B starves. */
	srdma_shared_hold_max = UINT32_MAX;
	served = b_served_beside_a_hoarder(SLOTS, &overrun);
	srdma_shared_hold_max = SRDMA_SLOTS;
	assert_false(overrun);
	assert_false(served);
	/* The bound: A's 17th message fails A, B is served. */
	served = b_served_beside_a_hoarder(SLOTS, &overrun);
	assert_true(overrun);
	assert_true(served);
}

static void bad_pool_sizes_are_refused(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l = NULL;
	struct srdma_err err;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.srq_slots = SRDMA_SRQ_MIN - 1;
	assert_int_equal(srdma_listen(&so, &l, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "srq_slots"));
	so.srq_slots = SRDMA_SRQ_MAX + 1;
	assert_int_equal(srdma_listen(&so, &l, &err), -EINVAL);
	assert_null(l);
	/* Not in shared mode: the shared calls say so. */
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	assert_int_equal(srdma_listener_wc_fd(l), -1);
	{
		struct srdma_wc wc;

		assert_int_equal(srdma_listener_poll_wc(l, &wc, 1), -EOPNOTSUPP);
	}
	srdma_listener_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bad_pool_sizes_are_refused),
		cmocka_unit_test(completions_are_routed_to_their_connection),
		cmocka_unit_test(a_window_is_its_own_qps),
		cmocka_unit_test(a_closed_windows_rkey_is_dead),
		cmocka_unit_test(a_client_cannot_keep_the_pool),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
