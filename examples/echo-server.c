/*
 * echo-server: the smallest complete srdma server, from srdma.h alone.
 *
 *   echo-server CERT KEY [PORT]        (PORT 0 or none: an ephemeral one)
 *
 * Every SEND a client makes is sent back to it from the same slot. One
 * thread, one poll(2) loop: the library's acceptor does TLS, the QP setup
 * and admission control on its own threads and reports through one fd; each
 * client adds two fds (its TLS control socket, its completion channel).
 * Ctrl-C (SIGINT) or SIGTERM: BYE to every client, then exit.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE	/* ppoll */
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <srdma.h>

#define MAX_CLIENTS 8

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

/* Echo what landed in receive slot i: copy it to send slot i and SEND it.
 * The receive slot is posted again when the SEND completes (wr_id = i). */
static int echo(struct srdma_conn *c, const struct ibv_wc *wc)
{
	size_t bs = srdma_conn_buf_size(c);
	char *out = (char *)srdma_conn_send_buf(c)->addr + wc->wr_id * bs;
	struct ibv_sge sge = { .addr = (uintptr_t)out, .length = wc->byte_len,
			       .lkey = srdma_conn_send_buf(c)->lkey };
	struct ibv_send_wr wr = { .wr_id = wc->wr_id, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;

	memcpy(out, (char *)srdma_conn_recv_buf(c)->addr + wc->wr_id * bs, wc->byte_len);
	return ibv_post_send(srdma_conn_qp(c), &wr, &bad);
}

/* Serve a batch of one client's completions: 0 drained (the CQs are armed
 * again), 1 more may wait (come back after the other clients' turns, so a
 * busy client cannot starve them), -1 the client must be closed. */
static int serve_cq(struct srdma_conn *c)
{
	struct ibv_wc wc[16];
	int n = srdma_conn_poll_wc(c, wc, 16);

	for (int i = 0; i < n; i++) {
		if (wc[i].status != IBV_WC_SUCCESS) {
			fprintf(stderr, "QP error: %s\n", ibv_wc_status_str(wc[i].status));
			return -1;
		}
		if (wc[i].opcode == IBV_WC_RECV ? echo(c, &wc[i])
		    : srdma_conn_post_recv(c, (unsigned int)wc[i].wr_id))
			return -1;
	}
	return n < 0 ? -1 : n == 16;
}

int main(int argc, char **argv)
{
	static const char *how[] = { "", "said bye", "sent ERROR", "lost",
				     "not responding", "broke the protocol" };
	struct sigaction sa = { .sa_handler = on_signal };
	struct srdma_conn *conns[MAX_CLIENTS] = { 0 };
	sigset_t stop_sigs, none;
	int more = 0;
	struct srdma_server_opts so;
	struct srdma_listener *l;
	struct srdma_err err;

	if (argc < 3) {
		fprintf(stderr, "usage: echo-server CERT KEY [PORT]\n");
		return 2;
	}
	/* SIGINT and SIGTERM arrive only inside ppoll(), so none is missed
	 * between the check of stop and the wait. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigemptyset(&none);
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGINT);
	sigaddset(&stop_sigs, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop_sigs, NULL);
	srdma_server_opts_init(&so);
	so.cert_file = argv[1];
	so.key_file = argv[2];
	so.port = (uint16_t)(argc > 3 ? atoi(argv[3]) : 0);
	so.max_clients = MAX_CLIENTS;	/* one more is told "server full" */
	if (srdma_listen(&so, &l, &err)) {
		fprintf(stderr, "echo-server: %s failed: %s\n", err.step, err.msg);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);	/* a log: a line at a time */
	printf("listening on port %u\n", srdma_listener_port(l));

	while (!stop) {
		struct pollfd p[1 + 2 * MAX_CLIENTS] = { { srdma_listener_fd(l), POLLIN, 0 } };
		const struct srdma_event *ev;
		int timeout = more ? 0 : -1;

		for (int i = 0; i < MAX_CLIENTS; i++) {
			int t = conns[i] ? srdma_conn_ctrl_timeout_ms(conns[i]) : -1;

			p[1 + 2 * i] = (struct pollfd){ conns[i] ? srdma_conn_ctrl_fd(conns[i]) : -1, POLLIN, 0 };
			p[2 + 2 * i] = (struct pollfd){ conns[i] ? srdma_conn_channel(conns[i])->fd : -1,
							POLLIN, 0 };
			if (t >= 0 && (timeout < 0 || t < timeout))
				timeout = t;
		}
		struct timespec ts = { timeout / 1000, timeout % 1000 * 1000000L };

		if (ppoll(p, 1 + 2 * MAX_CLIENTS, timeout < 0 ? NULL : &ts, &none) < 0 &&
		    errno != EINTR)
			break;
		more = 0;
		/* New clients (and news of refused or failed ones): a batch
		 * per turn, so that a connection storm cannot starve the
		 * clients; the fd stays readable for the rest. */
		for (int n = 0; n < 16 && srdma_listener_get_event(l, &ev) == 1; n++) {
			if (ev->type != SRDMA_EVENT_CONNECTED) {
				printf("%s: %s: %s\n", ev->peer_addr, ev->err.step, ev->err.msg);
				continue;
			}
			for (int i = 0; i < MAX_CLIENTS; i++)
				if (!conns[i]) {	/* the acceptor keeps to max_clients */
					conns[i] = ev->conn;
					printf("client %u from %s\n", ev->id, ev->peer_addr);
					break;
				}
		}
		for (int i = 0; i < MAX_CLIENTS; i++) {
			int ended, rc;

			if (!conns[i])
				continue;
			/* The control channel: the client's BYE, its loss, its
			 * liveness probes and ours. Called on every turn, it
			 * also covers srdma_conn_ctrl_timeout_ms(). */
			ended = srdma_conn_poll_ctrl(conns[i], &err);
			if (!ended && (rc = serve_cq(conns[i])) >= 0) {
				more |= rc;
				continue;
			}
			if (ended)
				printf("client %s: %s\n", how[ended], err.msg);
			srdma_conn_close(conns[i], ended ? 0 : SRDMA_ERROR_QP, NULL);
			conns[i] = NULL;
		}
	}
	for (int i = 0; i < MAX_CLIENTS; i++)
		srdma_conn_close(conns[i], 0, NULL);	/* BYE */
	srdma_listener_free(l);
	printf("stopped\n");
	return 0;
}
