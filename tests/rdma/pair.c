#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "pair.h"

struct accept_arg {
	struct srdma_listener *l;
	struct srdma_conn *c;
	struct srdma_err err;
	int rc;
};

int pair_seal;
int pair_rekey;

static void *accept_thread(void *p)
{
	struct accept_arg *a = p;

	a->rc = srdma_accept(a->l, 30000, &a->c, &a->err);
	return NULL;
}

void pair_server_opts(struct srdma_server_opts *so, enum srdma_psn_mode mode)
{
	srdma_server_opts_init(so);
	so->port = 0;	/* ephemeral: srdma_listener_port() says which */
	so->cert_file = SRDMA_TEST_CERTS "/server.pem";
	so->key_file = SRDMA_TEST_CERTS "/server.key";
	so->rdma.psn_mode = mode;
	so->seal = pair_seal;
	so->rekey = pair_rekey;
}

struct srdma_listener *pair_listen(enum srdma_psn_mode mode)
{
	struct srdma_server_opts so;

	pair_server_opts(&so, mode);
	return pair_listen_opts(&so);
}

struct srdma_listener *pair_listen_opts(const struct srdma_server_opts *so)
{
	struct srdma_listener *l;
	struct srdma_err err;
	int rc;

	rc = srdma_listen(so, &l, &err);
	if (rc)
		fprintf(stderr, "listen: %s: %s\n", err.step, err.msg);
	assert_int_equal(rc, 0);
	return l;
}

void pair_connect(struct srdma_listener *l, enum srdma_psn_mode mode,
		  struct srdma_conn **sc, struct srdma_conn **cc)
{
	struct srdma_client_opts co;
	struct accept_arg a = { .l = l };
	struct srdma_err err;
	pthread_t t;
	int rc;

	srdma_client_opts_init(&co);
	co.port = srdma_listener_port(l);
	co.ca_file = SRDMA_TEST_CERTS "/ca.pem";
	co.rdma.psn_mode = mode;
	co.seal = pair_seal;
	co.rekey = pair_rekey;
	assert_int_equal(pthread_create(&t, NULL, accept_thread, &a), 0);
	rc = srdma_connect(&co, "localhost", cc, &err);
	if (rc)
		fprintf(stderr, "connect: %s: %s\n", err.step, err.msg);
	pthread_join(t, NULL);
	if (a.rc)
		fprintf(stderr, "accept: %s: %s\n", a.err.step, a.err.msg);
	assert_int_equal(rc, 0);
	assert_int_equal(a.rc, 0);
	*sc = a.c;
}

void pair_send(struct srdma_conn *c, struct srdma_conn *s, const void *msg, uint32_t len,
	       struct ibv_wc *wc)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = len, .lkey = b->lkey };
	struct ibv_send_wr wr = { .wr_id = 7, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	bool got_recv = false;

	memcpy(b->addr, msg, len);
	assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	assert_int_equal(srdma_conn_next_wc(c, 5000, wc), 1);
	assert_int_equal(wc->status, IBV_WC_SUCCESS);
	while (!got_recv) {
		assert_int_equal(srdma_conn_next_wc(s, 5000, wc), 1);
		assert_int_equal(wc->status, IBV_WC_SUCCESS);
		got_recv = wc->opcode == IBV_WC_RECV;
	}
}
