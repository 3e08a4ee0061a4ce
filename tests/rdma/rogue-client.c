/*
 * rogue-client: a client built on libsrdma that misbehaves on purpose, for
 * tests. It sets up a connection like srdma-client, then:
 *
 *   info                  print the connection's secrets (JSON) and hold it
 *                         open until stdin ends
 *   write RKEY ADDR       RDMA-WRITE 8 bytes with this rkey and address
 *                         (hex; "own" for the server's real ones), print the
 *                         completion status, hold the connection until stdin
 *                         ends (so only the QP, not TLS, tells the server)
 *   bad-rkey              write with the server's rkey with bits flipped
 *
 * Usage: rogue-client --ca FILE --port N [--dev NAME] HOST MODE [ARGS]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <srdma.h>

static void hold_until_eof(void)
{
	char buf[256];

	while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
		;
}

static int rdma_write(struct srdma_conn *c, uint32_t rkey, uint64_t addr)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = 8, .lkey = b->lkey };
	struct ibv_send_wr wr = {
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.wr.rdma = { .remote_addr = addr, .rkey = rkey },
	}, *bad;
	struct ibv_wc wc;
	int n;

	memcpy(b->addr, "rogue!!\n", 8);
	if (ibv_post_send(srdma_conn_qp(c), &wr, &bad)) {
		printf("post failed\n");
		return 1;
	}
	n = srdma_conn_next_wc(c, 10000, &wc);
	if (n <= 0) {
		printf("wc: none (%d)\n", n);
		return 1;
	}
	printf("wc: %s\n", ibv_wc_status_str(wc.status));
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ca", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "dev", required_argument, NULL, 'd' },
		{ 0 }
	};
	struct srdma_client_opts o;
	const struct srdma_conn_info *i;
	struct srdma_conn *c;
	struct srdma_err err;
	const char *mode;
	int ch, rc = 0;

	srdma_client_opts_init(&o);
	while ((ch = getopt_long(argc, argv, "a:p:d:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'a': o.ca_file = optarg; break;
		case 'p': o.port = (uint16_t)atoi(optarg); break;
		case 'd': o.rdma.dev_name = optarg; break;
		default: return 2;
		}
	}
	if (argc - optind < 2) {
		fprintf(stderr, "usage: rogue-client --ca FILE --port N [--dev NAME] HOST MODE [ARGS]\n");
		return 2;
	}
	mode = argv[optind + 1];
	if (srdma_connect(&o, argv[optind], &c, &err)) {
		fprintf(stderr, "rogue-client: %s failed: %s\n", err.step, err.msg);
		return 1;
	}
	i = srdma_conn_info(c);
	if (!strcmp(mode, "info")) {
		printf("{\"qpn\":%u,\"rkey\":%u,\"addr\":%llu,\"len\":%u}\n", i->local_qpn,
		       i->remote_rkey, (unsigned long long)i->remote_addr, i->remote_len);
		fflush(stdout);
		hold_until_eof();
	} else if (!strcmp(mode, "write") && argc - optind == 4) {
		const char *rs = argv[optind + 2], *as = argv[optind + 3];
		uint32_t rkey = strcmp(rs, "own") ? (uint32_t)strtoul(rs, NULL, 0) : i->remote_rkey;
		uint64_t addr = strcmp(as, "own") ? strtoull(as, NULL, 0) : i->remote_addr;

		rc = rdma_write(c, rkey, addr);
		hold_until_eof();
	} else if (!strcmp(mode, "bad-rkey")) {
		rc = rdma_write(c, i->remote_rkey ^ 0x5a5a00u, i->remote_addr);
		hold_until_eof();
	} else {
		fprintf(stderr, "rogue-client: unknown mode '%s'\n", mode);
		rc = 2;
	}
	srdma_conn_close(c, 0, NULL);
	return rc;
}
