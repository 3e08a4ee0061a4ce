/*
 * libFuzzer target for the control-message decoder (src/lib/wire.c), the
 * first code that touches a peer's bytes after TLS. Besides "no crash, no
 * sanitizer report", it checks that whatever decodes re-encodes to exactly
 * the bytes it came from: no two encodings of one message, no field that
 * decoding silently drops or clamps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t again[SRDMA_WIRE_MAX_MSG];
	struct srdma_msg m;
	uint16_t type;
	uint32_t len;
	size_t out;

	if (size < SRDMA_WIRE_HDR_LEN)
		return 0;
	if (srdma_wire_decode_header(data, &type, &len))
		return 0;
	if (len > size - SRDMA_WIRE_HDR_LEN)
		return 0;	/* truncated: the reader would wait for more */
	if (srdma_wire_decode_body(type, data + SRDMA_WIRE_HDR_LEN, len, &m))
		return 0;
	if (srdma_wire_encode(&m, again, sizeof(again), &out) ||
	    out != SRDMA_WIRE_HDR_LEN + len || memcmp(again, data, out) != 0)
		abort();
	return 0;
}
