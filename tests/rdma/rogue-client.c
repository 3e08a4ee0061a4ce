/*
 * rogue-client: a client built on libsrdma that misbehaves on purpose, for
 * tests. It sets up a connection like srdma-client, prints the connection's
 * secrets as one JSON line ({"qpn","rkey","addr","len"} of the server's
 * window), then runs commands from stdin until EOF:
 *
 *   write RKEY ADDR   RDMA-WRITE 8 bytes with this rkey and address (numbers
 *                     in C notation; "own" for this connection's real ones)
 *                     and print "wc: STATUS"
 *   bad-rkey          the same with this connection's rkey, bits flipped
 *
 *   pipeline N SECS   keep N small SENDs in flight for SECS seconds (a client
 *                     that never lets the server's CQ run dry), reposting
 *                     receives as the echoes come; prints "pipeline: ..."
 *   keyupdate-flood   TLS KeyUpdate(update_requested) records, one after
 *                     another, never reading what comes back, until the
 *                     server hangs up; prints "flood: ..." with how it ended
 *   replay TEXT       SEND TEXT (sealed, with --seal) and then the very same
 *                     bytes again, as an attacker who captured and replays a
 *                     message would; prints "replay: N echoes; HOW" (HOW:
 *                     the server's reason when it closed)
 *
 * A failed write leaves the TLS connection open: the server can only learn
 * of it through the QP.
 *
 * --binding wrong|none|vanish breaks the peer binding: a wrong MAC, plain
 * data where the binding message belongs, or the TCP connection closed in
 * its place (the library's test seam).
 *
 * --seal: seal with AES-256-GCM (as srdma-client --seal).
 *
 * Usage: rogue-client --ca FILE --port N [--dev NAME] [--timeout MS]
 *                     [--binding wrong|none] [--seal] HOST
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "keyupdate.h"
#include "srdma_internal.h"

static void rdma_write(struct srdma_conn *c, uint32_t rkey, uint64_t addr)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = 8, .lkey = b->lkey };
	struct ibv_send_wr wr = {
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = addr, .rkey = rkey },
	}, *bad;
	struct ibv_wc wc;
	int n;

	memcpy(b->addr, "rogue!!\n", 8);
	if (ibv_post_send(srdma_conn_qp(c), &wr, &bad))
		printf("wc: post failed\n");
	else if ((n = srdma_conn_next_wc(c, 10000, &wc)) <= 0)
		printf("wc: none (%d)\n", n);
	else
		printf("wc: %s\n", ibv_wc_status_str(wc.status));
	fflush(stdout);
}

static bool post_small_send(struct srdma_conn *c)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = 8, .lkey = b->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;

	memcpy(b->addr, "pipeline", 8);
	return ibv_post_send(srdma_conn_qp(c), &wr, &bad) == 0;
}

/* Up to depth SENDs outstanding (sent, echo not yet back) for secs. */
static void pipeline(struct srdma_conn *c, int depth, int secs)
{
	int64_t end = srdma_now_ms() + secs * 1000;
	unsigned long sent = 0, echoed = 0;
	int sends_out = 0, echoes_due = 0;
	const char *how = "done";

	if (depth < 1 || depth > SRDMA_SLOTS - 1)
		depth = SRDMA_SLOTS - 1;
	while (srdma_now_ms() < end) {
		struct srdma_err err;
		struct ibv_wc wc;
		int n;

		if (srdma_conn_poll_ctrl(c, &err)) {	/* the server said BYE */
			how = "the server closed";
			break;
		}
		/* Our send queue holds SRDMA_SLOTS: only as many as it takes. */
		while (echoes_due < depth && sends_out < SRDMA_SLOTS && post_small_send(c)) {
			sent++;
			sends_out++;
			echoes_due++;
		}
		n = srdma_conn_next_wc(c, 200, &wc);
		if (n < 0 || (n == 1 && wc.status != IBV_WC_SUCCESS)) {
			how = n < 0 ? "completion error" : ibv_wc_status_str(wc.status);
			break;
		}
		if (n == 0)
			continue;
		if (wc.opcode & IBV_WC_RECV) {
			echoed++;
			echoes_due--;
			srdma_conn_post_recv(c, (unsigned int)wc.wr_id);
		} else {
			sends_out--;
		}
	}
	printf("pipeline: %lu sent, %lu echoed; %s\n", sent, echoed, how);
	fflush(stdout);
}

/* n SENDs whose echoes are never taken: the first SRDMA_SLOTS land in
 * our receives (each awaited, so the server sees no burst), the rest
 * stall at the server. Then wait up to 60 s for the server to close: a
 * client that keeps a shared pool's slots. */
static void hoard(struct srdma_conn *c, int n)
{
	int64_t end = srdma_now_ms() + 60000;
	const char *how = "still open after 60 s";
	int sent = 0, echoed = 0;

	while (sent < n && post_small_send(c)) {
		int64_t until = srdma_now_ms() + 5000;
		bool sent_done = false;

		/* Our send's completion and, while our receives last, its
		 * echo (the receive is never posted again). */
		while (srdma_now_ms() < until &&
		       (!sent_done || (sent < SRDMA_SLOTS && echoed <= sent))) {
			struct ibv_wc wc;
			int got = srdma_conn_next_wc(c, 200, &wc);

			if (got < 0 || (got == 1 && wc.status != IBV_WC_SUCCESS))
				goto out;
			if (got == 1 && (wc.opcode & IBV_WC_RECV))
				echoed++;
			else if (got == 1)
				sent_done = true;
		}
		if (!sent_done)
			break;
		sent++;
	}
out:
	printf("hoard: %d sent, %d echoes taken\n", sent, echoed);
	fflush(stdout);
	while (srdma_now_ms() < end) {
		struct srdma_err err;
		struct pollfd p = { .fd = srdma_conn_ctrl_fd(c), .events = POLLIN };

		if (srdma_conn_poll_ctrl(c, &err)) {
			how = "the server closed";
			break;
		}
		poll(&p, 1, 200);
	}
	printf("hoard: %s\n", how);
	fflush(stdout);
}

/* One message, then its replay: the same bytes posted twice. */
static void replay(struct srdma_conn *c, const char *text)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	size_t len = strlen(text), wire = len;
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .lkey = b->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND }, *bad;
	struct srdma_err err = { 0 };
	int64_t end = srdma_now_ms() + 10000;
	int echoes = 0, rc = 0;

	if (srdma_conn_info(c)->seal)
		rc = srdma_conn_seal(c, 1, text, len, b->addr, b->len, &wire);
	else
		memcpy(b->addr, text, len);
	sge.length = (uint32_t)wire;
	if (rc || ibv_post_send(srdma_conn_qp(c), &wr, &bad) ||
	    ibv_post_send(srdma_conn_qp(c), &wr, &bad)) {
		printf("replay: cannot post\n");
		fflush(stdout);
		return;
	}
	while (srdma_now_ms() < end && echoes < 2) {
		struct ibv_wc wc;
		int n = srdma_conn_next_wc(c, 500, &wc);

		if (n < 0)
			break;
		if (n == 1 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV) {
			echoes++;
			srdma_conn_post_recv(c, (unsigned int)wc.wr_id);
		}
	}
	rc = srdma_conn_poll_ctrl(c, &err);
	for (int i = 0; i < 50 && rc == 0 && echoes < 2; i++) {
		struct pollfd p = { .fd = srdma_conn_ctrl_fd(c), .events = POLLIN };

		poll(&p, 1, 100);
		rc = srdma_conn_poll_ctrl(c, &err);
	}
	printf("replay: %d echoes; %s\n", echoes, rc ? err.msg : "connection open");
	fflush(stdout);
}

/* KeyUpdates until the server closes (or a minute passes); never reads. */
static void flood(struct srdma_conn *c)
{
	unsigned long sent;
	const char *how = keyupdate_flood(c->ssl, srdma_conn_ctrl_fd(c),
					  srdma_now_ms() + 60000, &sent);

	printf("flood: %lu KeyUpdates sent; %s\n", sent, how);
	fflush(stdout);
}

static void run_commands(struct srdma_conn *c)
{
	const struct srdma_conn_info *i = srdma_conn_info(c);
	char line[256], rs[64], as[64];
	int depth, secs;

	while (fgets(line, sizeof(line), stdin)) {
		if (sscanf(line, "write %63s %63s", rs, as) == 2) {
			uint32_t rkey = strcmp(rs, "own") ? (uint32_t)strtoul(rs, NULL, 0)
							  : i->remote_rkey;
			uint64_t addr = strcmp(as, "own") ? strtoull(as, NULL, 0) : i->remote_addr;

			rdma_write(c, rkey, addr);
		} else if (!strncmp(line, "bad-rkey", 8)) {
			rdma_write(c, i->remote_rkey ^ 0x5a5a00u, i->remote_addr);
		} else if (sscanf(line, "pipeline %d %d", &depth, &secs) == 2) {
			pipeline(c, depth, secs);
		} else if (sscanf(line, "hoard %d", &depth) == 1) {
			hoard(c, depth);
		} else if (!strncmp(line, "replay ", 7)) {
			line[strcspn(line, "\n")] = '\0';
			replay(c, line + 7);
		} else if (!strncmp(line, "keyupdate-flood", 15)) {
			flood(c);
		} else {
			printf("unknown command\n");
			fflush(stdout);
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ca", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "dev", required_argument, NULL, 'd' },
		{ "timeout", required_argument, NULL, 't' },
		{ "binding", required_argument, NULL, 'b' },
		{ "seal", no_argument, NULL, 'E' },
		{ 0 }
	};
	struct srdma_client_opts o;
	const struct srdma_conn_info *i;
	struct srdma_conn *c;
	struct srdma_err err;
	int ch;

	srdma_client_opts_init(&o);
	while ((ch = getopt_long(argc, argv, "a:p:d:t:b:E", longopts, NULL)) != -1) {
		switch (ch) {
		case 'a': o.ca_file = optarg; break;
		case 'p': o.port = (uint16_t)atoi(optarg); break;
		case 'd': o.rdma.dev_name = optarg; break;
		case 't': o.handshake_ms = atoi(optarg); break;
		case 'E': o.seal = SRDMA_SEAL_AES_256_GCM; break;
		case 'b':
			srdma_binding_fault = !strcmp(optarg, "wrong") ? 1 :
					      !strcmp(optarg, "none") ? 2 :
					      !strcmp(optarg, "vanish") ? 3 : -1;
			if (srdma_binding_fault < 0)
				return 2;
			break;
		default: return 2;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, "usage: rogue-client --ca FILE --port N [--dev NAME] HOST\n");
		return 2;
	}
	if (srdma_connect(&o, argv[optind], &c, &err)) {
		fprintf(stderr, "rogue-client: %s failed: %s\n", err.step, err.msg);
		return 1;
	}
	i = srdma_conn_info(c);
	printf("{\"qpn\":%u,\"rkey\":%u,\"addr\":%llu,\"len\":%u}\n", i->local_qpn,
	       i->remote_rkey, (unsigned long long)i->remote_addr, i->remote_len);
	fflush(stdout);
	run_commands(c);
	srdma_conn_close(c, 0, NULL);
	return 0;
}
