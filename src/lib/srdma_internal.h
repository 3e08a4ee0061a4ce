/* Internal declarations shared by the library's files and its unit tests. */
#ifndef SRDMA_INTERNAL_H
#define SRDMA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * A source of random bytes with getrandom(2)'s contract: returns the number
 * of bytes written (possibly fewer than asked) or -1 with errno set.
 */
typedef ssize_t (*srdma_random_fn)(void *buf, size_t len, unsigned int flags);

/* srdma_psn_generate() with the random source made explicit (tests use it). */
int srdma_psn_from_source(uint32_t *psn, srdma_random_fn source);

#endif
