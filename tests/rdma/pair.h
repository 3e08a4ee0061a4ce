/*
 * Test helper: a listener and secure connections to it within one process
 * (both ends on the same RDMA device), with the build's test certificates.
 * Failures are cmocka assertions.
 */
#ifndef SRDMA_TEST_PAIR_H
#define SRDMA_TEST_PAIR_H

#include "srdma.h"

/* The seal cipher both ends of the next listener and connection use
 * (enum srdma_seal_cipher; 0: none). */
extern int pair_seal;
/* Whether both ends opt in to rekeying (the rekey option). */
extern int pair_rekey;

/* A listener on a per-process port (server certificate, PSN mode). */
struct srdma_listener *pair_listen(enum srdma_psn_mode mode);
/* The options pair_listen() uses, to change before pair_listen_opts(). */
void pair_server_opts(struct srdma_server_opts *so, enum srdma_psn_mode mode);
struct srdma_listener *pair_listen_opts(const struct srdma_server_opts *so);
/* One connection to l: *sc the server's end, *cc the client's. */
void pair_connect(struct srdma_listener *l, enum srdma_psn_mode mode,
		  struct srdma_conn **sc, struct srdma_conn **cc);

/* SEND len bytes of msg from c (its send slot 0) and wait for the send's
 * completion, then for s's receive: *wc is that receive's completion. */
void pair_send(struct srdma_conn *c, struct srdma_conn *s, const void *msg, uint32_t len,
	       struct ibv_wc *wc);

#endif
