/*
 * echo-client: the smallest complete srdma client, from srdma.h alone.
 *
 *   echo-client CA HOST PORT MESSAGE...
 *
 * Verifies the server against CA, brings up an RC QP with it, then SENDs
 * each MESSAGE and prints what comes back (echo-server and srdma-server
 * both echo). Exit status: 0 when every message came back, 1 otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <srdma.h>

/* SEND msg from send slot 0; wait for its completion and the echo. */
static int round_trip(struct srdma_conn *c, const char *msg)
{
	const struct srdma_buf *sb = srdma_conn_send_buf(c), *rb = srdma_conn_recv_buf(c);
	size_t len = strlen(msg), bs = srdma_conn_buf_size(c);
	struct ibv_sge sge = { .addr = (uintptr_t)sb->addr, .length = (uint32_t)len,
			       .lkey = sb->lkey };
	struct ibv_send_wr wr = { .wr_id = 0, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	int sent = 0, echoed = 0;

	if (len > bs) {
		fprintf(stderr, "message longer than the %zu-byte slot\n", bs);
		return -1;
	}
	memcpy(sb->addr, msg, len);
	if (ibv_post_send(srdma_conn_qp(c), &wr, &bad))
		return -1;
	while (!sent || !echoed) {
		struct ibv_wc wc;
		/* Up to 5 s for each completion; -ENOTCONN if the server left. */
		int n = srdma_conn_next_wc(c, 5000, &wc);

		if (n <= 0) {
			fprintf(stderr, "%s\n", n == 0 ? "no echo within 5 s" :
				n == -ENOTCONN ? "the server closed the connection" : strerror(-n));
			return -1;
		}
		if (wc.status != IBV_WC_SUCCESS) {
			fprintf(stderr, "QP error: %s\n", ibv_wc_status_str(wc.status));
			return -1;
		}
		if (!(wc.opcode & IBV_WC_RECV)) {
			sent = 1;
			continue;
		}
		/* The echo landed in receive slot wr_id: print it (it is the
		 * server's bytes: only printable ones), then post it again. */
		printf("echo: \"");
		for (uint32_t i = 0; i < wc.byte_len; i++) {
			unsigned char ch = ((unsigned char *)rb->addr)[wc.wr_id * bs + i];

			putchar(ch >= 0x20 && ch < 0x7f ? ch : '?');
		}
		printf("\"\n");
		echoed = 1;
		if (srdma_conn_post_recv(c, (unsigned int)wc.wr_id))
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct srdma_client_opts co;
	struct srdma_conn *c;
	struct srdma_err err;
	int status = 0;

	if (argc < 5) {
		fprintf(stderr, "usage: echo-client CA HOST PORT MESSAGE...\n");
		return 2;
	}
	srdma_client_opts_init(&co);
	co.ca_file = argv[1];
	co.port = (uint16_t)atoi(argv[3]);
	if (srdma_connect(&co, argv[2], &c, &err)) {
		fprintf(stderr, "echo-client: %s failed: %s%s\n", err.step, err.msg,
			err.peer_code == SRDMA_ERROR_SERVER_FULL ? " (try later)" : "");
		return 1;
	}
	printf("connected to %s with %s, QP 0x%06x\n", srdma_conn_info(c)->peer_addr,
	       srdma_conn_info(c)->tls_version, srdma_conn_info(c)->local_qpn);
	for (int i = 4; i < argc && status == 0; i++)
		status = round_trip(c, argv[i]) ? 1 : 0;
	srdma_conn_close(c, 0, NULL);	/* BYE */
	return status;
}
