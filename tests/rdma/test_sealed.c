/*
 * Sealed messages over a real QP (srdma_conn_seal(), srdma_conn_open()):
 * what crosses is ciphertext, and a replayed, altered or unsealed message
 * is refused and ends the connection. Each attack runs first without
 * sealing, as its control: there the same bytes are delivered and taken.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
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

static const int ciphers[] = { SRDMA_SEAL_AES_256_GCM, SRDMA_SEAL_CHACHA20_POLY1305 };

/* Post len bytes of c's send slot 0 (a SEND, or a WRITE WITH IMMEDIATE
 * of the length into the peer's window), and take its completion. */
static void post(struct srdma_conn *c, enum ibv_wr_opcode op, uint32_t len)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	const struct srdma_conn_info *in = srdma_conn_info(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = len, .lkey = b->lkey };
	struct ibv_send_wr wr = { .wr_id = 1, .sg_list = &sge, .num_sge = 1, .opcode = op,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct ibv_wc wc;

	if (op == IBV_WR_RDMA_WRITE_WITH_IMM) {
		wr.wr.rdma.remote_addr = in->remote_addr;
		wr.wr.rdma.rkey = in->remote_rkey;
		wr.imm_data = htonl(len);
	}
	assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	do
		assert_int_equal(srdma_conn_next_wc(c, 5000, &wc), 1);
	while (wc.opcode != IBV_WC_SEND && wc.opcode != IBV_WC_RDMA_WRITE);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
}

/* The next message on c: its bytes (a receive slot's, or the window's for a
 * write) and length. The slot is posted again (the bytes stay there until
 * the next message). */
static uint8_t *next_msg(struct srdma_conn *c, size_t *len)
{
	struct ibv_wc wc;

	for (;;) {
		assert_int_equal(srdma_conn_next_wc(c, 5000, &wc), 1);
		assert_int_equal(wc.status, IBV_WC_SUCCESS);
		if (wc.opcode == IBV_WC_RECV) {
			uint8_t *p = (uint8_t *)srdma_conn_recv_buf(c)->addr +
				     wc.wr_id * srdma_conn_buf_size(c);

			*len = wc.byte_len;
			assert_int_equal(srdma_conn_post_recv(c, (unsigned int)wc.wr_id), 0);
			return p;
		}
		if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
			*len = ntohl(wc.imm_data);
			assert_true(*len <= srdma_conn_window(c)->len);
			assert_int_equal(srdma_conn_post_recv(c, (unsigned int)wc.wr_id), 0);
			return srdma_conn_window(c)->addr;
		}
	}
}

static void seal_into_send_slot(struct srdma_conn *c, uint16_t kind, const char *text,
				size_t *len)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);

	assert_int_equal(srdma_conn_seal(c, kind, text, strlen(text), b->addr, b->len, len), 0);
	assert_int_equal(*len, strlen(text) + SRDMA_SEAL_OVERHEAD);
}

static void open_ok(struct srdma_conn *c, uint8_t *p, size_t len, uint16_t want_kind,
		    const char *want)
{
	uint16_t kind;
	void *msg;
	size_t mlen;

	assert_int_equal(srdma_conn_open(c, p, len, &kind, &msg, &mlen), 0);
	assert_int_equal(kind, want_kind);
	assert_int_equal(mlen, strlen(want));
	assert_memory_equal(msg, want, mlen);
}

static void sealed_messages_cross(void **state)
{
	(void)state;
	for (size_t k = 0; k < 2; k++) {
		struct srdma_listener *l;
		struct srdma_conn *s, *c;
		size_t len;
		uint8_t *p;

		pair_seal = ciphers[k];
		l = pair_listen(SRDMA_PSN_EXCHANGE);
		pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
		assert_int_equal(srdma_conn_info(s)->seal, ciphers[k]);
		assert_int_equal(srdma_conn_info(c)->seal, ciphers[k]);
		for (int i = 0; i < 20; i++) {
			size_t got;

			seal_into_send_slot(c, 1, "MARKER sent by SEND", &len);
			post(c, IBV_WR_SEND, (uint32_t)len);
			p = next_msg(s, &got);
			assert_int_equal(got, len);
			/* What landed in the server's memory (and crossed the
			 * link) is ciphertext. */
			assert_null(memmem(p, got, "MARKER", 6));
			open_ok(s, p, got, 1, "MARKER sent by SEND");

			seal_into_send_slot(s, 2, "the server's answer", &len);
			post(s, IBV_WR_SEND, (uint32_t)len);
			p = next_msg(c, &got);
			open_ok(c, p, got, 2, "the server's answer");

			seal_into_send_slot(c, 3, "MARKER written into the window", &len);
			post(c, IBV_WR_RDMA_WRITE_WITH_IMM, (uint32_t)len);
			p = next_msg(s, &got);
			assert_int_equal(got, len);
			assert_ptr_equal(p, srdma_conn_window(s)->addr);
			assert_null(memmem(p, got, "MARKER", 6));
			open_ok(s, p, got, 3, "MARKER written into the window");
		}
		srdma_conn_close(c, 0, NULL);
		srdma_conn_close(s, 0, NULL);
		srdma_listener_free(l);
	}
	pair_seal = 0;
}

/* After a refused open: the server's connection has ended for a clear
 * reason, its QP is failed, and the client is told why. */
static void assert_ended(struct srdma_conn *s, struct srdma_conn *c, const char *why)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;
	struct srdma_err err;
	struct pollfd p = { .fd = srdma_conn_ctrl_fd(c), .events = POLLIN };
	int rc = 0;

	assert_int_equal(srdma_conn_poll_ctrl(s, &err), SRDMA_CLOSE_PROTOCOL);
	print_message("refused: %s: %s\n", err.step, err.msg);
	assert_non_null(strstr(err.msg, why));
	assert_int_equal(ibv_query_qp(srdma_conn_qp(s), &a, IBV_QP_STATE, &ia), 0);
	assert_int_equal(a.qp_state, IBV_QPS_ERR);
	srdma_conn_close(s, 0, NULL);
	for (int i = 0; i < 50 && rc == 0; i++) {
		poll(&p, 1, 100);
		rc = srdma_conn_poll_ctrl(c, &err);
	}
	assert_int_equal(rc, SRDMA_CLOSE_ERROR);
	assert_int_equal(err.peer_code, SRDMA_ERROR_SEAL);
	print_message("the client was told: %s\n", err.msg);
	srdma_conn_close(c, 0, NULL);
}

static void replay_is_refused(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	uint8_t first[64], *p;
	size_t len, got;
	uint16_t kind;
	void *msg;
	size_t mlen;

	(void)state;
	/* Control: without sealing, the same bytes twice are taken twice. */
	pair_seal = 0;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	memcpy(srdma_conn_send_buf(c)->addr, "pay 100 to mallory", 18);
	post(c, IBV_WR_SEND, 18);
	post(c, IBV_WR_SEND, 18);
	p = next_msg(s, &got);
	memcpy(first, p, got);
	p = next_msg(s, &got);
	assert_int_equal(got, 18);
	assert_memory_equal(p, first, 18);
	print_message("control: unsealed, a message sent twice was taken twice\n");
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);

	pair_seal = SRDMA_SEAL_AES_256_GCM;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	seal_into_send_slot(c, 1, "pay 100 to mallory", &len);
	post(c, IBV_WR_SEND, (uint32_t)len);
	post(c, IBV_WR_SEND, (uint32_t)len);		/* the replay */
	p = next_msg(s, &got);
	open_ok(s, p, got, 1, "pay 100 to mallory");
	p = next_msg(s, &got);
	assert_int_equal(srdma_conn_open(s, p, got, &kind, &msg, &mlen), -EBADMSG);
	assert_int_equal(srdma_conn_open(s, p, got, &kind, &msg, &mlen), -ENOTCONN);
	assert_ended(s, c, "replayed");
	srdma_listener_free(l);
	pair_seal = 0;
}

static void altered_message_is_refused(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	uint8_t *p;
	size_t len, got;
	uint16_t kind;
	void *msg;
	size_t mlen;

	(void)state;
	pair_seal = 0;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	memcpy(srdma_conn_send_buf(c)->addr, "pay 100 to alice", 16);
	((uint8_t *)srdma_conn_send_buf(c)->addr)[4] ^= 0x08;	/* "pay 900" */
	post(c, IBV_WR_SEND, 16);
	p = next_msg(s, &got);
	assert_memory_equal(p, "pay 900 to alice", 16);
	print_message("control: unsealed, an altered message was taken as it came\n");
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);

	pair_seal = SRDMA_SEAL_CHACHA20_POLY1305;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	seal_into_send_slot(c, 1, "pay 100 to alice", &len);
	((uint8_t *)srdma_conn_send_buf(c)->addr)[SRDMA_SEAL_HDR_LEN + 4] ^= 0x08;
	post(c, IBV_WR_SEND, (uint32_t)len);
	p = next_msg(s, &got);
	assert_int_equal(srdma_conn_open(s, p, got, &kind, &msg, &mlen), -EBADMSG);
	/* Nothing of it is left readable. */
	assert_null(memmem(p, got, "alice", 5));
	assert_ended(s, c, "does not verify");
	srdma_listener_free(l);
	pair_seal = 0;
}

/* Bytes written into the window that the peer never sealed, notified. */
static void unsealed_write_is_refused(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	const char *forged = "0123456789abcdef: forged window bytes, not sealed";
	uint8_t *p;
	size_t got;
	uint16_t kind;
	void *msg;
	size_t mlen;

	(void)state;
	pair_seal = 0;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	memcpy(srdma_conn_send_buf(c)->addr, forged, strlen(forged));
	post(c, IBV_WR_RDMA_WRITE_WITH_IMM, (uint32_t)strlen(forged));
	p = next_msg(s, &got);
	assert_memory_equal(p, forged, strlen(forged));
	print_message("control: unsealed, written bytes were taken as they came\n");
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);

	pair_seal = SRDMA_SEAL_AES_256_GCM;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	memcpy(srdma_conn_send_buf(c)->addr, forged, strlen(forged));
	post(c, IBV_WR_RDMA_WRITE_WITH_IMM, (uint32_t)strlen(forged));
	p = next_msg(s, &got);
	assert_int_equal(srdma_conn_open(s, p, got, &kind, &msg, &mlen), -EBADMSG);
	assert_ended(s, c, "not a sealed message");
	srdma_listener_free(l);
	pair_seal = 0;
}

/* The listener's side of a setup that is expected to fail. */
struct expect_fail {
	struct srdma_listener *l;
	struct srdma_err err;
	int type;
};

static void *take_event(void *arg)
{
	struct expect_fail *x = arg;
	const struct srdma_event *ev;

	for (int i = 0; i < 300; i++) {
		struct pollfd p = { .fd = srdma_listener_fd(x->l), .events = POLLIN };

		if (srdma_listener_get_event(x->l, &ev) == 1) {
			x->type = ev->type;
			x->err = ev->err;
			if (ev->type == SRDMA_EVENT_CONNECTED)
				srdma_conn_close(ev->conn, 0, NULL);
			return NULL;
		}
		poll(&p, 1, 100);
	}
	return NULL;
}

static void modes_must_match(void **state)
{
	static const int pairs[][2] = {	/* server, client */
		{ SRDMA_SEAL_AES_256_GCM, 0 },
		{ 0, SRDMA_SEAL_AES_256_GCM },
		{ SRDMA_SEAL_AES_256_GCM, SRDMA_SEAL_CHACHA20_POLY1305 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		struct srdma_client_opts co;
		struct expect_fail x = { 0 };
		struct srdma_conn *c = NULL;
		struct srdma_err err;
		pthread_t t;
		int rc;

		pair_seal = pairs[i][0];
		x.l = pair_listen(SRDMA_PSN_EXCHANGE);
		srdma_client_opts_init(&co);
		co.port = srdma_listener_port(x.l);
		co.ca_file = SRDMA_TEST_CERTS "/ca.pem";
		co.seal = pairs[i][1];
		assert_int_equal(pthread_create(&t, NULL, take_event, &x), 0);
		rc = srdma_connect(&co, "localhost", &c, &err);
		pthread_join(t, NULL);
		print_message("server %s, client %s: %s: %s / server: %s\n",
			      srdma_seal_name(pairs[i][0]), srdma_seal_name(pairs[i][1]),
			      err.step, err.msg, x.err.msg);
		assert_int_not_equal(rc, 0);
		assert_null(c);
		assert_non_null(strstr(err.msg, "seal mode mismatch"));
		assert_int_equal(x.type, SRDMA_EVENT_FAILED);
		assert_non_null(strstr(x.err.msg, "seal mode mismatch"));
		srdma_listener_free(x.l);
	}
	pair_seal = 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sealed_messages_cross),
		cmocka_unit_test(replay_is_refused),
		cmocka_unit_test(altered_message_is_refused),
		cmocka_unit_test(unsealed_write_is_refused),
		cmocka_unit_test(modes_must_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
