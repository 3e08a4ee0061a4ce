/*
 * inject: an off-path injector for tests (tests/rdma/forge.c). Sends COUNT
 * forged RC SENDs to QPN, each with a random PSN, as a PSN sweep would, at
 * the rate the link takes them, and prints "inject: N sent to QPN".
 *
 * Usage: inject QPN COUNT   (in rxe-vm's single-guest layout, as root)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>

#include "forge.h"

int main(int argc, char **argv)
{
	unsigned long qpn, count, sent = 0;
	struct forge f;
	char why[128], *end;

	if (argc != 3) {
		fprintf(stderr, "usage: inject QPN COUNT\n");
		return 2;
	}
	qpn = strtoul(argv[1], &end, 0);
	if (*end || qpn < 2 || qpn > 0xffffff) {
		fprintf(stderr, "inject: QPN '%s' is not 2..0xffffff\n", argv[1]);
		return 2;
	}
	count = strtoul(argv[2], &end, 0);
	if (*end || count < 1 || count > 100000000) {
		fprintf(stderr, "inject: COUNT '%s' is not 1..100000000\n", argv[2]);
		return 2;
	}
	if (forge_open(&f, why, sizeof(why))) {
		fprintf(stderr, "inject: %s\n", why);
		return 77;
	}
	while (sent < count) {
		uint32_t psn;

		if (getrandom(&psn, sizeof(psn), 0) != (ssize_t)sizeof(psn))
			return 1;
		if (forge_send(&f, (uint32_t)qpn, psn & 0xffffff, "injected!", 9)) {
			if (errno == ENOBUFS) {
				usleep(100);	/* the link's queue is full: wait */
				continue;
			}
			fprintf(stderr, "inject: send: %s\n", strerror(errno));
			return 1;
		}
		sent++;
	}
	printf("inject: %lu sent to QPN 0x%lx\n", sent, qpn);
	close(f.fd);
	return 0;
}
