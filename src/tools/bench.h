/* srdma-bench's parts: the options, shared helpers, and each mode's entry. */
#ifndef SRDMA_BENCH_H
#define SRDMA_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern const char *prog;

enum mode { LAT, BW, CONNECT, SCALE };

struct opts {
	enum mode mode;
	const char *host, *ca, *cert, *key, *dev;
	unsigned long port, size, iters, gid, depth, parallel, server_pid, idle_s, rounds;
	int handshake_ms;	/* -t: each connection's setup deadline (0: default) */
	int seal;		/* --seal: enum srdma_seal_cipher */
	bool all, json, has_gid, has_iters;
};

/* --inline-size: what the QPs take and the sends carry inline (lat, bw). */
extern unsigned long inline_max;

struct srdma_conn;
/* SEND len bytes from send slot 0 (inline when it fits inline_max). */
int post_send(struct srdma_conn *c, uint32_t len, bool signaled);

void die_oom(void);
int cmp_double(const void *a, const void *b);
/* The p-quantile of n sorted values. */
double pct(const double *t, size_t n, double p);

/* bench-pair.c: lat and bw, one connection between two srdma-bench. */
int pair_bench(const struct opts *o);
/* bench-many.c: connect and scale, many connections to one srdma-server. */
int run_connect(const struct opts *o);
int run_scale(const struct opts *o);

#endif
