/* Test helper: a TLS KeyUpdate flood, for rogue-client and rogue-server. */
#ifndef SRDMA_TEST_KEYUPDATE_H
#define SRDMA_TEST_KEYUPDATE_H

#include <stdint.h>
#include <openssl/ssl.h>

/*
 * KeyUpdate(update_requested) records on ssl (over socket fd), one after
 * another, never reading what comes back, until the peer hangs up or
 * end_ms (CLOCK_MONOTONIC milliseconds) passes. The receive buffer of fd is
 * made small first, as an attacker would, so the victim's answers back up
 * within seconds, not megabytes. Returns how it ended; *sent counts them.
 */
const char *keyupdate_flood(SSL *ssl, int fd, int64_t end_ms, unsigned long *sent);

#endif
