/*
 * srdma: a secure bootstrap for RDMA reliable connections.
 *
 * Two peers meet over TLS, exchange cryptographically random 24-bit packet
 * sequence numbers (PSNs) and every queue-pair parameter over that channel,
 * then bring their RC queue pairs up with raw IB verbs. This header is the
 * whole public API.
 *
 * Conventions: functions that can fail return 0 on success and a negative
 * errno value on failure; nothing is half-done on failure.
 */
#ifndef SRDMA_H
#define SRDMA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SRDMA_API __attribute__((visibility("default")))
#else
#define SRDMA_API
#endif

/* A PSN is 24 bits wide (InfiniBand BTH); every value is valid. */
#define SRDMA_PSN_BITS 24
#define SRDMA_PSN_MASK 0xffffffu

/* The library's version, "MAJOR.MINOR.PATCH". */
SRDMA_API const char *srdma_version(void);

/*
 * Draw a PSN uniformly from all 2^24 values, from the kernel's CSPRNG
 * (getrandom(2)). On failure returns a negative errno and leaves *psn
 * untouched: there is no time- or pid-based fallback, so a caller that cannot
 * get a PSN must refuse the connection.
 */
SRDMA_API int srdma_psn_generate(uint32_t *psn);

#ifdef __cplusplus
}
#endif

#endif /* SRDMA_H */
