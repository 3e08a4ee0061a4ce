/*
 * seal-speed: what sealing costs on this CPU, without RDMA: srdma's own
 * seal and open (src/lib/seal.c) in a loop, per cipher, for 8 bytes and
 * 64 KiB. A benchmark, not a test (docs/BENCHMARKS.md quotes it).
 *
 * Usage: seal-speed
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srdma_internal.h"

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(void)
{
	static const uint8_t k1[SRDMA_SEAL_KEY_LEN] = "client to server", k2[SRDMA_SEAL_KEY_LEN] = "s2c";
	static const size_t sizes[] = { 8, 65536 };
	static uint8_t msg[65536], buf[65536 + SRDMA_SEAL_OVERHEAD];

	for (int cipher = SRDMA_SEAL_AES_256_GCM; cipher <= SRDMA_SEAL_CHACHA20_POLY1305; cipher++)
		for (size_t k = 0; k < 2; k++) {
			size_t len = sizes[k], out, mlen;
			int n = len == 8 ? 200000 : 2000;
			struct srdma_seal *a, *b;
			double t0, t1, t2;
			uint16_t kind;
			void *m;

			if (srdma_seal_new(&a, cipher, false, 0, k1, k2) ||
			    srdma_seal_new(&b, cipher, true, 0, k2, k1))
				return 1;
			t0 = now_s();
			for (int i = 0; i < n; i++)
				if (srdma_seal_msg(a, 1, msg, len, buf, sizeof(buf), &out))
					return 1;
			t1 = now_s();
			srdma_seal_free(a);
			if (srdma_seal_new(&a, cipher, false, 0, k1, k2))
				return 1;
			t2 = now_s();
			for (int i = 0; i < n; i++)
				if (srdma_seal_msg(a, 1, msg, len, buf, sizeof(buf), &out) ||
				    srdma_seal_open(b, buf, out, out, &kind, &m, &mlen))
					return 1;
			printf("%-18s %6zu B: seal %9.3f us, seal + open %9.3f us, seal %7.1f MB/s\n",
			       srdma_seal_name(cipher), len, (t1 - t0) / n * 1e6,
			       (now_s() - t2) / n * 1e6, (double)len * n / (t1 - t0) / 1e6);
			srdma_seal_free(a);
			srdma_seal_free(b);
		}
	return 0;
}
