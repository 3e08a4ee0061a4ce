/*
 * Control messages of the TLS control channel: a fixed 6-byte header (u16
 * type, u32 body length) and a body whose layout depends on the type. All
 * integers are big-endian and fixed width. docs/PROTOCOL.md is the reference.
 *
 * Everything decoded here comes from the peer and is untrusted: every read is
 * bounds-checked by a cursor, every length is checked against its exact
 * expected value or a small fixed limit, and every field is range-checked
 * before the message is handed on. Like the rest of the library, functions
 * return 0 or a negative errno and do nothing by halves: on failure the
 * output (buffer, message) is left untouched.
 */
#ifndef SRDMA_WIRE_H
#define SRDMA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "srdma.h"

#define SRDMA_WIRE_VERSION	2
#define SRDMA_WIRE_HDR_LEN	6		/* u16 type, u32 body length */
#define SRDMA_WIRE_MAX_BODY	512		/* larger is rejected: -EMSGSIZE */
#define SRDMA_WIRE_MAX_TEXT	200		/* ERROR text bytes */
#define SRDMA_WIRE_MAX_WINDOW	(1u << 30)	/* largest RDMA window length accepted */
#define SRDMA_WIRE_MAX_MSG	(SRDMA_WIRE_HDR_LEN + SRDMA_WIRE_MAX_BODY)

enum srdma_msg_type {
	SRDMA_MSG_HELLO = 1,
	SRDMA_MSG_PARAMS = 2,
	SRDMA_MSG_READY = 3,
	SRDMA_MSG_ERROR = 4,
	SRDMA_MSG_BYE = 5,
	SRDMA_MSG_PING = 6,	/* liveness probe; only to a peer with SRDMA_CAP_PING */
	SRDMA_MSG_PONG = 7,	/* the answer to PING */
	SRDMA_MSG_REKEY = 8,	/* moving to a fresh QP; only to a peer with SRDMA_CAP_REKEY */
};
#define SRDMA_MSG_LAST SRDMA_MSG_REKEY

/* ERROR codes: enum srdma_error_code in srdma.h (public: a peer's
 * err->peer_code, srdma_conn_close()'s code). */

/* HELLO caps: the peer offers an RDMA WRITE target window. */
#define SRDMA_CAP_WRITE_WINDOW	0x1u
#define SRDMA_CAP_PSN_EXPORTER	0x2u
/* HELLO caps: the sender answers PING with PONG after setup. */
#define SRDMA_CAP_PING		0x4u
/* HELLO caps: the sender seals every RDMA message with this cipher (at most
 * one set; both sides must set the same). */
#define SRDMA_CAP_SEAL_AES_256_GCM	0x8u
#define SRDMA_CAP_SEAL_CHACHA20	0x10u
/* HELLO caps: the sender takes part in rekeying (REKEY). */
#define SRDMA_CAP_REKEY		0x20u
#define SRDMA_CAP_SEAL_MASK	(SRDMA_CAP_SEAL_AES_256_GCM | SRDMA_CAP_SEAL_CHACHA20)

struct srdma_hello {
	uint16_t version;
	uint32_t caps;
};

struct srdma_params {
	uint32_t qpn;		/* 24-bit, 0 and 1 reserved: valid 2..0xffffff */
	uint32_t psn;		/* 24-bit: 0..0xffffff */
	uint16_t lid;		/* any value (0 on RoCE) */
	uint8_t gid[16];	/* any value */
	uint8_t mtu;		/* enum ibv_mtu: 1 (256) .. 5 (4096) */
	uint64_t addr;		/* RDMA write window; all three 0 = no window */
	uint32_t rkey;
	uint32_t len;		/* <= SRDMA_WIRE_MAX_WINDOW; addr + len must not overflow uint64 */
};

/* REKEY phases (docs/PROTOCOL.md, "Rekeying"). */
enum srdma_rekey_phase {
	SRDMA_REKEY_OFFER = 1,	/* the new QP's QPN and PSN */
	SRDMA_REKEY_ANSWER = 2,	/* the peer's new QP, already in RTS */
	SRDMA_REKEY_SWITCH = 3,	/* the offerer has switched: qpn and psn 0 */
	SRDMA_REKEY_DONE = 4,	/* the sender's marker is acknowledged: the
				 * old QP may go (qpn and psn 0) */
};

struct srdma_rekey_msg {
	uint8_t phase;		/* enum srdma_rekey_phase */
	uint32_t qpn;		/* OFFER, ANSWER: 2..0xffffff; SWITCH: 0 */
	uint32_t psn;		/* 24-bit (0 in exporter mode); SWITCH: 0 */
};

struct srdma_error_msg {
	uint16_t code;
	char text[SRDMA_WIRE_MAX_TEXT + 1];	/* NUL-terminated */
};

struct srdma_msg {
	uint16_t type;
	union {
		struct srdma_hello hello;
		struct srdma_params params;
		struct srdma_error_msg error;
		struct srdma_rekey_msg rekey;
	} u;
};

/*
 * Bounds-checked read cursor over untrusted bytes: each get returns 0, or
 * -EBADMSG if fewer bytes remain than asked (cursor unchanged then).
 */
struct srdma_cursor {
	const uint8_t *p;
	size_t len;
	size_t pos;
};

void srdma_cursor_init(struct srdma_cursor *c, const void *p, size_t len);
size_t srdma_cursor_left(const struct srdma_cursor *c);
int srdma_cursor_get_u8(struct srdma_cursor *c, uint8_t *v);
int srdma_cursor_get_u16(struct srdma_cursor *c, uint16_t *v);
int srdma_cursor_get_u32(struct srdma_cursor *c, uint32_t *v);
int srdma_cursor_get_u64(struct srdma_cursor *c, uint64_t *v);
int srdma_cursor_get_bytes(struct srdma_cursor *c, void *out, size_t n);

/*
 * Write buffer: each put returns 0, or -ENOBUFS when it would pass cap
 * (buffer unchanged then).
 */
struct srdma_wbuf {
	uint8_t *p;
	size_t cap;
	size_t len;
};

void srdma_wbuf_init(struct srdma_wbuf *w, void *p, size_t cap);
int srdma_wbuf_put_u8(struct srdma_wbuf *w, uint8_t v);
int srdma_wbuf_put_u16(struct srdma_wbuf *w, uint16_t v);
int srdma_wbuf_put_u32(struct srdma_wbuf *w, uint32_t v);
int srdma_wbuf_put_u64(struct srdma_wbuf *w, uint64_t v);
int srdma_wbuf_put_bytes(struct srdma_wbuf *w, const void *p, size_t n);

/*
 * Encode m (header + body) into buf. Validates m the same way decode does
 * (an invalid PARAMS, an ERROR text that is too long or not printable ASCII,
 * an unknown type: -EINVAL). -ENOBUFS if cap is too small; buf is not
 * written then. On success *out_len = bytes written.
 */
int srdma_wire_encode(const struct srdma_msg *m, void *buf, size_t cap, size_t *out_len);

/*
 * Parse the 6-byte header. Unknown type: -EPROTO (checked first).
 * body_len > SRDMA_WIRE_MAX_BODY: -EMSGSIZE. Outputs written only on success.
 * The exact body length of each type is checked by srdma_wire_decode_body().
 */
int srdma_wire_decode_header(const uint8_t hdr[SRDMA_WIRE_HDR_LEN], uint16_t *type,
			     uint32_t *body_len);

/*
 * Decode a body of the given type. Unknown type: -EPROTO (checked first).
 * Each type has an exact body length (ERROR: 2 to 2 + SRDMA_WIRE_MAX_TEXT);
 * any other length: -EBADMSG. A non-printable ERROR text byte: -EBADMSG.
 * A PARAMS field out of range: -ERANGE. m is written only on success.
 */
int srdma_wire_decode_body(uint16_t type, const void *body, size_t len, struct srdma_msg *m);

/* What a decoder error (-EPROTO, -EMSGSIZE, -EBADMSG, -ERANGE) means, in
 * words for a log: "a field out of range", ... */
const char *srdma_wire_error_text(int rc);

/* "HELLO", "PARAMS", "READY", "ERROR", "BYE", "PING", "PONG", "REKEY", or
 * "UNKNOWN". */
const char *srdma_msg_type_name(uint16_t type);

/*
 * "server full", "version mismatch", "bad message", "handshake timeout",
 * "RDMA setup failed", "internal error", "unexpected message",
 * "shutting down", "peer binding failed", "PSN mode mismatch",
 * "RDMA connection failed", "not responding", "seal mode mismatch",
 * "sealed message rejected"; otherwise "unknown error".
 */
const char *srdma_err_code_name(uint16_t code);

#endif /* SRDMA_WIRE_H */
