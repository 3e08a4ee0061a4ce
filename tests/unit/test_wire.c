/*
 * Unit tests for the control-message codec (src/lib/wire.c). They pin the
 * byte layout (big-endian, exact body sizes), every range and length check,
 * the "nothing half-done on failure" rule, and, with a deterministic fuzz
 * loop, that whatever the decoder accepts has exactly one encoding.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "wire.h"

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define PARAMS_BODY	43
#define HELLO_BODY	6
#define SENTINEL	0xa5

/* ---- helpers ---- */

static struct srdma_msg hello_msg(uint16_t version, uint32_t caps)
{
	struct srdma_msg m = { .type = SRDMA_MSG_HELLO };

	m.u.hello.version = version;
	m.u.hello.caps = caps;
	return m;
}

/* A valid PARAMS with a window; tests change one field at a time. */
static struct srdma_msg params_msg(void)
{
	struct srdma_msg m = { .type = SRDMA_MSG_PARAMS };
	struct srdma_params *pm = &m.u.params;

	pm->qpn = 0x000123;
	pm->psn = 0xabcdef;
	pm->lid = 7;
	for (size_t i = 0; i < sizeof(pm->gid); i++)
		pm->gid[i] = (uint8_t)(0xf0 + i);
	pm->mtu = 3;
	pm->addr = 0x7f0000001000ull;
	pm->rkey = 0x11223344;
	pm->len = 4096;
	return m;
}

static struct srdma_msg empty_msg(uint16_t type)
{
	struct srdma_msg m = { .type = type };

	return m;
}

static struct srdma_msg error_msg(uint16_t code, const char *text)
{
	struct srdma_msg m = { .type = SRDMA_MSG_ERROR };

	m.u.error.code = code;
	strncpy(m.u.error.text, text, sizeof(m.u.error.text) - 1);
	return m;
}

/* A text of exactly SRDMA_WIRE_MAX_TEXT bytes using both printable edges. */
static struct srdma_msg max_error_msg(void)
{
	struct srdma_msg m = { .type = SRDMA_MSG_ERROR };

	m.u.error.code = SRDMA_ERROR_SHUTDOWN;
	for (size_t i = 0; i < SRDMA_WIRE_MAX_TEXT; i++)
		m.u.error.text[i] = (char)(0x20 + i % (0x7f - 0x20));
	m.u.error.text[SRDMA_WIRE_MAX_TEXT] = '\0';
	return m;
}

static void assert_msg_equal(const struct srdma_msg *a, const struct srdma_msg *b)
{
	const struct srdma_params *pa = &a->u.params, *pb = &b->u.params;

	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case SRDMA_MSG_HELLO:
		assert_int_equal(a->u.hello.version, b->u.hello.version);
		assert_int_equal(a->u.hello.caps, b->u.hello.caps);
		break;
	case SRDMA_MSG_PARAMS:
		assert_int_equal(pa->qpn, pb->qpn);
		assert_int_equal(pa->psn, pb->psn);
		assert_int_equal(pa->lid, pb->lid);
		assert_memory_equal(pa->gid, pb->gid, sizeof(pa->gid));
		assert_int_equal(pa->mtu, pb->mtu);
		assert_true(pa->addr == pb->addr);
		assert_int_equal(pa->rkey, pb->rkey);
		assert_int_equal(pa->len, pb->len);
		break;
	case SRDMA_MSG_ERROR:
		assert_int_equal(a->u.error.code, b->u.error.code);
		assert_string_equal(a->u.error.text, b->u.error.text);
		break;
	default:
		break;
	}
}

/* Encode, check the header, decode header and body, compare with the original. */
static void round_trip(const struct srdma_msg *m, size_t want_body_len)
{
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	struct srdma_msg out;
	uint32_t body_len = 0;
	uint16_t type = 0;
	size_t len = 0;

	assert_int_equal(srdma_wire_encode(m, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, SRDMA_WIRE_HDR_LEN + want_body_len);
	assert_int_equal(srdma_wire_decode_header(buf, &type, &body_len), 0);
	assert_int_equal(type, m->type);
	assert_int_equal(body_len, want_body_len);
	memset(&out, SENTINEL, sizeof(out));
	assert_int_equal(srdma_wire_decode_body(type, buf + SRDMA_WIRE_HDR_LEN, body_len, &out), 0);
	assert_msg_equal(m, &out);
}

/*
 * Write a PARAMS body without the encoder's checks, so that decode can be
 * fed out-of-range fields. Uses only the wbuf puts.
 */
static size_t raw_params_body(const struct srdma_params *pm, uint8_t *buf, size_t cap)
{
	struct srdma_wbuf w;

	srdma_wbuf_init(&w, buf, cap);
	assert_int_equal(srdma_wbuf_put_u32(&w, pm->qpn), 0);
	assert_int_equal(srdma_wbuf_put_u32(&w, pm->psn), 0);
	assert_int_equal(srdma_wbuf_put_u16(&w, pm->lid), 0);
	assert_int_equal(srdma_wbuf_put_bytes(&w, pm->gid, sizeof(pm->gid)), 0);
	assert_int_equal(srdma_wbuf_put_u8(&w, pm->mtu), 0);
	assert_int_equal(srdma_wbuf_put_u64(&w, pm->addr), 0);
	assert_int_equal(srdma_wbuf_put_u32(&w, pm->rkey), 0);
	assert_int_equal(srdma_wbuf_put_u32(&w, pm->len), 0);
	return w.len;
}

/* decode_body must fail with want and leave m exactly as it was. */
static void assert_body_rejected(uint16_t type, const void *body, size_t len, int want)
{
	struct srdma_msg m, before;

	memset(&m, SENTINEL, sizeof(m));
	memcpy(&before, &m, sizeof(m));
	assert_int_equal(srdma_wire_decode_body(type, body, len, &m), want);
	assert_memory_equal(&m, &before, sizeof(m));
}

static void put_header(uint8_t *hdr, uint16_t type, uint32_t body_len)
{
	struct srdma_wbuf w;

	srdma_wbuf_init(&w, hdr, SRDMA_WIRE_HDR_LEN);
	assert_int_equal(srdma_wbuf_put_u16(&w, type), 0);
	assert_int_equal(srdma_wbuf_put_u32(&w, body_len), 0);
}

/* ---- round trips ---- */

static void round_trip_hello(void **state)
{
	(void)state;
	static const uint16_t versions[] = { 0, SRDMA_WIRE_VERSION, 0xffff };
	static const uint32_t caps[] = { 0, SRDMA_CAP_WRITE_WINDOW, 0xfffffffe, 0xffffffff };

	/* Any version decodes (the caller compares) and unknown cap bits survive. */
	for (size_t i = 0; i < ARRAY_SIZE(versions); i++) {
		for (size_t j = 0; j < ARRAY_SIZE(caps); j++) {
			struct srdma_msg m = hello_msg(versions[i], caps[j]);

			round_trip(&m, HELLO_BODY);
		}
	}
}

static void round_trip_params_edges(void **state)
{
	(void)state;
	static const uint32_t qpns[] = { 2, 0xffffff };
	static const uint32_t psns[] = { 0, 0xffffff };
	static const uint8_t mtus[] = { 1, 5 };
	static const uint16_t lids[] = { 0, 0xffff };
	/* No window; the largest window; the largest with addr + len == UINT64_MAX. */
	static const struct { uint64_t addr; uint32_t rkey, len; } windows[] = {
		{ 0, 0, 0 },
		{ 0x1000, 0xffffffff, SRDMA_WIRE_MAX_WINDOW },
		{ UINT64_MAX - SRDMA_WIRE_MAX_WINDOW, 1, SRDMA_WIRE_MAX_WINDOW },
		{ 0, 0, 1 },	/* addr 0 with a length: zero-based MRs exist */
	};

	/* Every combination: bit k of n picks the edge of field k. */
	for (unsigned int n = 0; n < 16 * ARRAY_SIZE(windows); n++) {
		struct srdma_msg m = params_msg();
		unsigned int w = n / 16;

		m.u.params.qpn = qpns[n & 1];
		m.u.params.psn = psns[n >> 1 & 1];
		m.u.params.mtu = mtus[n >> 2 & 1];
		m.u.params.lid = lids[n >> 3 & 1];
		memset(m.u.params.gid, n % 3 ? 0xff : 0x00, sizeof(m.u.params.gid));
		m.u.params.addr = windows[w].addr;
		m.u.params.rkey = windows[w].rkey;
		m.u.params.len = windows[w].len;
		round_trip(&m, PARAMS_BODY);
	}
}

static void round_trip_ready_and_bye(void **state)
{
	(void)state;
	struct srdma_msg ready = empty_msg(SRDMA_MSG_READY);
	struct srdma_msg bye = empty_msg(SRDMA_MSG_BYE);
	struct srdma_msg ping = empty_msg(SRDMA_MSG_PING);
	struct srdma_msg pong = empty_msg(SRDMA_MSG_PONG);

	round_trip(&ready, 0);
	round_trip(&bye, 0);
	round_trip(&ping, 0);
	round_trip(&pong, 0);
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_PING), "PING");
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_PONG), "PONG");
}

static void round_trip_error(void **state)
{
	(void)state;
	struct srdma_msg empty = error_msg(SRDMA_ERROR_BAD_MESSAGE, "");
	struct srdma_msg some = error_msg(SRDMA_ERROR_SERVER_FULL, "server full (10 of 10)");
	struct srdma_msg unknown_code = error_msg(0xffff, "~ ");
	struct srdma_msg zero_code = error_msg(0, "x");
	struct srdma_msg longest = max_error_msg();

	round_trip(&empty, 2);
	round_trip(&some, 2 + strlen(some.u.error.text));
	round_trip(&unknown_code, 4);
	round_trip(&zero_code, 3);
	round_trip(&longest, 2 + SRDMA_WIRE_MAX_TEXT);
}

/* ---- exact bytes ---- */

static void params_encoding_is_big_endian(void **state)
{
	(void)state;
	static const uint8_t expected[SRDMA_WIRE_HDR_LEN + PARAMS_BODY] = {
		0x00, 0x02,				/* type PARAMS */
		0x00, 0x00, 0x00, 0x2b,			/* body length 43 */
		0x00, 0x12, 0x34, 0x56,			/* qpn */
		0x00, 0xab, 0xcd, 0xef,			/* psn */
		0xbe, 0xef,				/* lid */
		0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,	/* gid */
		0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
		0x04,					/* mtu 2048 */
		0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,	/* addr */
		0xde, 0xad, 0xbe, 0xef,			/* rkey */
		0x00, 0x10, 0x00, 0x00,			/* len 1 MiB */
	};
	struct srdma_msg m = { .type = SRDMA_MSG_PARAMS };
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	struct srdma_msg out;
	size_t len = 0;

	m.u.params.qpn = 0x123456;
	m.u.params.psn = 0xabcdef;
	m.u.params.lid = 0xbeef;
	for (size_t i = 0; i < sizeof(m.u.params.gid); i++)
		m.u.params.gid[i] = (uint8_t)i;
	m.u.params.mtu = 4;
	m.u.params.addr = 0x0123456789abcdefull;
	m.u.params.rkey = 0xdeadbeef;
	m.u.params.len = 0x100000;

	assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, sizeof(expected));
	assert_memory_equal(buf, expected, sizeof(expected));

	/* And the hand-written bytes decode to the same fields. */
	assert_int_equal(srdma_wire_decode_body(SRDMA_MSG_PARAMS, expected + SRDMA_WIRE_HDR_LEN,
						PARAMS_BODY, &out), 0);
	assert_msg_equal(&m, &out);
}

static void small_messages_encode_exactly(void **state)
{
	(void)state;
	static const uint8_t hello[] = { 0, 1, 0, 0, 0, 6, 0x12, 0x34, 0x80, 0, 0, 1 };
	static const uint8_t ready[] = { 0, 3, 0, 0, 0, 0 };
	static const uint8_t error[] = { 0, 4, 0, 0, 0, 4, 0x01, 0x02, 'h', 'i' };
	struct srdma_msg h = hello_msg(0x1234, 0x80000001);
	struct srdma_msg r = empty_msg(SRDMA_MSG_READY);
	struct srdma_msg e = error_msg(0x0102, "hi");
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	size_t len = 0;

	assert_int_equal(srdma_wire_encode(&h, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, sizeof(hello));
	assert_memory_equal(buf, hello, sizeof(hello));
	assert_int_equal(srdma_wire_encode(&r, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, sizeof(ready));
	assert_memory_equal(buf, ready, sizeof(ready));
	assert_int_equal(srdma_wire_encode(&e, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, sizeof(error));
	assert_memory_equal(buf, error, sizeof(error));
}

/* ---- lengths ---- */

/* Every prefix of an encoded body is refused. */
static void assert_prefixes_rejected(const struct srdma_msg *m)
{
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	size_t len = 0;

	assert_int_equal(srdma_wire_encode(m, buf, sizeof(buf), &len), 0);
	for (size_t n = 0; n < len - SRDMA_WIRE_HDR_LEN; n++)
		assert_body_rejected(m->type, buf + SRDMA_WIRE_HDR_LEN, n, -EBADMSG);
}

/* The encoded body with one printable byte more is refused. */
static void assert_one_more_rejected(const struct srdma_msg *m)
{
	uint8_t buf[SRDMA_WIRE_MAX_MSG + 1];
	size_t len = 0;

	assert_int_equal(srdma_wire_encode(m, buf, sizeof(buf) - 1, &len), 0);
	buf[len] = ' ';	/* printable, so only the length can be wrong */
	assert_body_rejected(m->type, buf + SRDMA_WIRE_HDR_LEN, len - SRDMA_WIRE_HDR_LEN + 1,
			     -EBADMSG);
}

static void truncated_and_long_bodies_rejected(void **state)
{
	(void)state;
	const struct srdma_msg fixed[] = {
		hello_msg(1, 1), params_msg(), empty_msg(SRDMA_MSG_READY),
		empty_msg(SRDMA_MSG_BYE), empty_msg(SRDMA_MSG_PING), empty_msg(SRDMA_MSG_PONG),
	};
	struct srdma_msg err_min = error_msg(SRDMA_ERROR_TIMEOUT, "");
	struct srdma_msg err_max = max_error_msg();
	uint8_t any[SRDMA_WIRE_MAX_MSG] = { 0 };

	for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) {
		assert_prefixes_rejected(&fixed[i]);
		assert_one_more_rejected(&fixed[i]);
	}
	/*
	 * ERROR has a range of lengths: shorter than its code, or longer than
	 * code + MAX_TEXT, is refused (see error_text_is_the_rest_of_the_body).
	 */
	assert_prefixes_rejected(&err_min);
	assert_one_more_rejected(&err_max);
	/* A way out-of-range length is refused before any byte is read. */
	assert_body_rejected(SRDMA_MSG_ERROR, any, SIZE_MAX, -EBADMSG);
	assert_body_rejected(SRDMA_MSG_PARAMS, any, SIZE_MAX, -EBADMSG);
	assert_body_rejected(SRDMA_MSG_HELLO, any, SIZE_MAX, -EBADMSG);
	assert_body_rejected(SRDMA_MSG_READY, NULL, SIZE_MAX, -EBADMSG);
}

/*
 * ERROR's text fills its body, so a shorter ERROR body is a shorter text,
 * not a truncation: framing (the header's length) is what catches a cut.
 */
static void error_text_is_the_rest_of_the_body(void **state)
{
	(void)state;
	struct srdma_msg m = error_msg(SRDMA_ERROR_INTERNAL, "abcdef");
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	struct srdma_msg out;
	size_t len = 0;

	assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), 0);
	for (size_t n = 2; n <= len - SRDMA_WIRE_HDR_LEN; n++) {
		assert_int_equal(srdma_wire_decode_body(SRDMA_MSG_ERROR,
							buf + SRDMA_WIRE_HDR_LEN, n, &out), 0);
		assert_int_equal(strlen(out.u.error.text), n - 2);
		assert_memory_equal(out.u.error.text, "abcdef", n - 2);
	}
}

static void header_body_len_limits(void **state)
{
	(void)state;
	static const uint32_t too_big[] = { SRDMA_WIRE_MAX_BODY + 1, 0x10000, 0x7fffffff,
					    0x80000000, 0xffffffff };
	uint8_t hdr[SRDMA_WIRE_HDR_LEN];
	uint32_t body_len;
	uint16_t type;

	put_header(hdr, SRDMA_MSG_ERROR, SRDMA_WIRE_MAX_BODY);
	assert_int_equal(srdma_wire_decode_header(hdr, &type, &body_len), 0);
	assert_int_equal(type, SRDMA_MSG_ERROR);
	assert_int_equal(body_len, SRDMA_WIRE_MAX_BODY);

	put_header(hdr, SRDMA_MSG_READY, 0);
	assert_int_equal(srdma_wire_decode_header(hdr, &type, &body_len), 0);
	assert_int_equal(type, SRDMA_MSG_READY);
	assert_int_equal(body_len, 0);

	for (size_t i = 0; i < ARRAY_SIZE(too_big); i++) {
		type = 0x5555;
		body_len = 0x5555;
		put_header(hdr, SRDMA_MSG_PARAMS, too_big[i]);
		assert_int_equal(srdma_wire_decode_header(hdr, &type, &body_len), -EMSGSIZE);
		/* Outputs untouched: a caller cannot size a read from them by mistake. */
		assert_int_equal(type, 0x5555);
		assert_int_equal(body_len, 0x5555);
	}
}

static void unknown_types_rejected(void **state)
{
	(void)state;
	static const uint16_t unknown[] = { 0, 9, 0x0100, 0xffff };
	uint8_t hdr[SRDMA_WIRE_HDR_LEN];
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	uint8_t body[4] = { 0 };
	uint32_t body_len = 0x5555;
	uint16_t type = 0x5555;
	size_t len = 0x5555;

	for (size_t i = 0; i < ARRAY_SIZE(unknown); i++) {
		struct srdma_msg m = empty_msg(unknown[i]);

		put_header(hdr, unknown[i], 0);
		assert_int_equal(srdma_wire_decode_header(hdr, &type, &body_len), -EPROTO);
		/* The type is refused even when the length is also wrong. */
		put_header(hdr, unknown[i], 0xffffffff);
		assert_int_equal(srdma_wire_decode_header(hdr, &type, &body_len), -EPROTO);
		assert_int_equal(type, 0x5555);
		assert_int_equal(body_len, 0x5555);

		assert_body_rejected(unknown[i], body, 0, -EPROTO);
		assert_body_rejected(unknown[i], body, sizeof(body), -EPROTO);

		assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), -EINVAL);
		assert_int_equal(len, 0x5555);
		assert_string_equal(srdma_msg_type_name(unknown[i]), "UNKNOWN");
	}
}

/* ---- field ranges ---- */

enum field { F_QPN, F_PSN, F_MTU, F_ADDR, F_RKEY, F_LEN };

static const struct violation {
	const char *what;
	enum field field;
	uint64_t value;
	uint32_t len;		/* the window length to use with it */
} violations[] = {
	{ "qpn 0", F_QPN, 0, 4096 },
	{ "qpn 1", F_QPN, 1, 4096 },
	{ "qpn 0x1000000", F_QPN, 0x1000000, 4096 },
	{ "qpn 0xffffffff", F_QPN, 0xffffffff, 4096 },
	{ "psn 0x1000000", F_PSN, 0x1000000, 4096 },
	{ "psn 0xffffffff", F_PSN, 0xffffffff, 4096 },
	{ "mtu 0", F_MTU, 0, 4096 },
	{ "mtu 6", F_MTU, 6, 4096 },
	{ "mtu 0xff", F_MTU, 0xff, 4096 },
	{ "len MAX_WINDOW + 1", F_LEN, SRDMA_WIRE_MAX_WINDOW + 1u, 0 },
	{ "len 0xffffffff", F_LEN, 0xffffffff, 0 },
	{ "addr + len overflows", F_ADDR, UINT64_MAX - 4096 + 1, 4096 },
	{ "addr + len overflows (max)", F_ADDR, UINT64_MAX, 1 },
	{ "len 0 with rkey", F_RKEY, 0x1234, 0 },
	{ "len 0 with addr", F_ADDR, 0x1000, 0 },
};

static struct srdma_msg violating_params(const struct violation *v)
{
	struct srdma_msg m = params_msg();
	struct srdma_params *pm = &m.u.params;

	pm->len = v->len;
	if (v->len == 0) {	/* start from "no window", then break one rule */
		pm->addr = 0;
		pm->rkey = 0;
	}
	switch (v->field) {
	case F_QPN:
		pm->qpn = (uint32_t)v->value;
		break;
	case F_PSN:
		pm->psn = (uint32_t)v->value;
		break;
	case F_MTU:
		pm->mtu = (uint8_t)v->value;
		break;
	case F_ADDR:
		pm->addr = v->value;
		break;
	case F_RKEY:
		pm->rkey = (uint32_t)v->value;
		break;
	case F_LEN:
		pm->len = (uint32_t)v->value;
		break;
	}
	return m;
}

static void params_range_violations_rejected(void **state)
{
	(void)state;
	uint8_t body[PARAMS_BODY];
	uint8_t buf[SRDMA_WIRE_MAX_MSG];

	for (size_t i = 0; i < ARRAY_SIZE(violations); i++) {
		struct srdma_msg m = violating_params(&violations[i]);
		size_t len = 0x5555;

		print_message("  %s\n", violations[i].what);
		assert_int_equal(raw_params_body(&m.u.params, body, sizeof(body)), PARAMS_BODY);
		assert_body_rejected(SRDMA_MSG_PARAMS, body, sizeof(body), -ERANGE);

		memset(buf, SENTINEL, sizeof(buf));
		assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), -EINVAL);
		assert_int_equal(len, 0x5555);
		assert_int_equal(buf[0], SENTINEL);
	}
}

/* The neighbours of every violation are accepted: the checks are tight. */
static void params_range_edges_accepted(void **state)
{
	(void)state;
	struct srdma_msg m = params_msg();
	struct srdma_params *pm = &m.u.params;
	uint8_t body[PARAMS_BODY];
	struct srdma_msg out;

	pm->addr = UINT64_MAX - 4096;	/* addr + len == UINT64_MAX: no wrap */
	pm->len = 4096;
	assert_int_equal(raw_params_body(pm, body, sizeof(body)), PARAMS_BODY);
	assert_int_equal(srdma_wire_decode_body(SRDMA_MSG_PARAMS, body, sizeof(body), &out), 0);
	assert_msg_equal(&m, &out);

	pm->addr = 0;
	pm->rkey = 0;
	pm->len = 0;
	assert_int_equal(raw_params_body(pm, body, sizeof(body)), PARAMS_BODY);
	assert_int_equal(srdma_wire_decode_body(SRDMA_MSG_PARAMS, body, sizeof(body), &out), 0);
	assert_msg_equal(&m, &out);
}

/* ---- ERROR text ---- */

static void error_text_rejected(void **state)
{
	(void)state;
	static const uint8_t bad_bytes[] = { 0x00, 0x01, '\t', '\n', '\r', 0x1b, 0x1f, 0x7f,
					     0x80, 0xc3, 0xff };
	uint8_t body[2 + SRDMA_WIRE_MAX_TEXT + 1];
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	struct srdma_msg m;
	size_t len = 0x5555;

	/* Decode: a bad byte first, in the middle, or last. */
	for (size_t i = 0; i < ARRAY_SIZE(bad_bytes); i++) {
		static const size_t at[] = { 2, 5, 9 };

		for (size_t j = 0; j < ARRAY_SIZE(at); j++) {
			memset(body, 'a', 10);
			body[0] = 0;
			body[1] = SRDMA_ERROR_BAD_MESSAGE;
			body[at[j]] = bad_bytes[i];
			assert_body_rejected(SRDMA_MSG_ERROR, body, 10, -EBADMSG);
		}
	}
	/* Decode: 201 text bytes, all printable. */
	memset(body, 'a', sizeof(body));
	assert_body_rejected(SRDMA_MSG_ERROR, body, sizeof(body), -EBADMSG);

	/* Encode: a control character, a byte above 0x7e. */
	m = error_msg(SRDMA_ERROR_INTERNAL, "line one\nline two");
	assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), -EINVAL);
	m = error_msg(SRDMA_ERROR_INTERNAL, "\x1b[2Jclear");
	assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), -EINVAL);
	m = error_msg(SRDMA_ERROR_INTERNAL, "caf\xc3\xa9");
	assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), -EINVAL);
	/* Encode: 201 bytes, no NUL anywhere in the array. */
	m = max_error_msg();
	m.u.error.text[SRDMA_WIRE_MAX_TEXT] = 'z';
	assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), -EINVAL);
	assert_int_equal(len, 0x5555);
}

/* ---- buffers ---- */

static void encode_short_buffers_rejected(void **state)
{
	(void)state;
	const struct srdma_msg msgs[] = {
		hello_msg(1, 1), params_msg(), empty_msg(SRDMA_MSG_READY),
		empty_msg(SRDMA_MSG_BYE), error_msg(2, "version mismatch"), max_error_msg(),
	};
	uint8_t buf[SRDMA_WIRE_MAX_MSG];

	for (size_t i = 0; i < ARRAY_SIZE(msgs); i++) {
		size_t need = 0, len;

		assert_int_equal(srdma_wire_encode(&msgs[i], buf, sizeof(buf), &need), 0);
		for (size_t cap = 0; cap < need; cap++) {
			len = 0x5555;
			memset(buf, SENTINEL, sizeof(buf));
			assert_int_equal(srdma_wire_encode(&msgs[i], buf, cap, &len), -ENOBUFS);
			assert_int_equal(len, 0x5555);
			/* Nothing written, not even inside cap. */
			for (size_t k = 0; k < sizeof(buf); k++)
				assert_int_equal(buf[k], SENTINEL);
		}
		assert_int_equal(srdma_wire_encode(&msgs[i], buf, need, &len), 0);
		assert_int_equal(len, need);
	}
	/* No buffer at all. */
	assert_int_equal(srdma_wire_encode(&msgs[2], NULL, 0, &(size_t){ 0 }), -ENOBUFS);
}

static void cursor_gets_at_end_leave_pos(void **state)
{
	(void)state;
	static const uint8_t bytes[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 };
	struct srdma_cursor c;
	uint64_t v64 = 0x5555;
	uint32_t v32 = 0x5555;
	uint16_t v16 = 0x5555;
	uint8_t v8 = 0x55, out[8] = { 0 };

	srdma_cursor_init(&c, bytes, sizeof(bytes));
	assert_int_equal(srdma_cursor_left(&c), 7);
	assert_int_equal(srdma_cursor_get_u64(&c, &v64), -EBADMSG);	/* 7 < 8 */
	assert_int_equal(c.pos, 0);
	assert_true(v64 == 0x5555);
	assert_int_equal(srdma_cursor_get_bytes(&c, out, 8), -EBADMSG);
	assert_int_equal(c.pos, 0);

	assert_int_equal(srdma_cursor_get_u32(&c, &v32), 0);
	assert_int_equal(v32, 0x01020304);
	assert_int_equal(srdma_cursor_get_u32(&c, &v32), -EBADMSG);	/* 3 left */
	assert_int_equal(v32, 0x01020304);
	assert_int_equal(c.pos, 4);
	assert_int_equal(srdma_cursor_get_u16(&c, &v16), 0);
	assert_int_equal(v16, 0x0506);
	assert_int_equal(srdma_cursor_get_u16(&c, &v16), -EBADMSG);	/* 1 left */
	assert_int_equal(srdma_cursor_get_bytes(&c, out, 2), -EBADMSG);
	assert_int_equal(c.pos, 6);
	assert_int_equal(srdma_cursor_get_u8(&c, &v8), 0);
	assert_int_equal(v8, 0x07);

	/* At the very end every get fails and nothing moves. */
	assert_int_equal(srdma_cursor_left(&c), 0);
	assert_int_equal(srdma_cursor_get_u8(&c, &v8), -EBADMSG);
	assert_int_equal(srdma_cursor_get_u16(&c, &v16), -EBADMSG);
	assert_int_equal(srdma_cursor_get_u32(&c, &v32), -EBADMSG);
	assert_int_equal(srdma_cursor_get_u64(&c, &v64), -EBADMSG);
	assert_int_equal(srdma_cursor_get_bytes(&c, out, 1), -EBADMSG);
	assert_int_equal(srdma_cursor_get_bytes(&c, out, SIZE_MAX), -EBADMSG);
	assert_int_equal(c.pos, 7);
	assert_int_equal(v8, 0x07);
	assert_int_equal(v16, 0x0506);
	assert_int_equal(srdma_cursor_get_bytes(&c, out, 0), 0);
	assert_int_equal(c.pos, 7);

	/* An empty cursor over no buffer. */
	srdma_cursor_init(&c, NULL, 0);
	assert_int_equal(srdma_cursor_get_u8(&c, &v8), -EBADMSG);
	assert_int_equal(srdma_cursor_get_bytes(&c, NULL, 0), 0);
	assert_int_equal(c.pos, 0);
}

static void cursor_reads_big_endian_u64(void **state)
{
	(void)state;
	static const uint8_t bytes[] = { 0x80, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0xff };
	struct srdma_cursor c;
	uint64_t v = 0;

	srdma_cursor_init(&c, bytes, sizeof(bytes));
	assert_int_equal(srdma_cursor_get_u64(&c, &v), 0);
	assert_true(v == 0x80112233445566ffull);
	assert_int_equal(srdma_cursor_left(&c), 0);
}

static void wbuf_puts_past_cap_leave_buffer(void **state)
{
	(void)state;
	static const uint8_t want[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 };
	uint8_t buf[8];
	struct srdma_wbuf w;

	memset(buf, SENTINEL, sizeof(buf));
	srdma_wbuf_init(&w, buf, 7);
	assert_int_equal(srdma_wbuf_put_u64(&w, 0x1122334455667788ull), -ENOBUFS);
	assert_int_equal(w.len, 0);
	assert_int_equal(srdma_wbuf_put_u32(&w, 0x01020304), 0);
	assert_int_equal(srdma_wbuf_put_u32(&w, 0xaaaaaaaa), -ENOBUFS);
	assert_int_equal(srdma_wbuf_put_u16(&w, 0x0506), 0);
	assert_int_equal(srdma_wbuf_put_u16(&w, 0xaaaa), -ENOBUFS);
	assert_int_equal(srdma_wbuf_put_bytes(&w, "xx", 2), -ENOBUFS);
	assert_int_equal(srdma_wbuf_put_u8(&w, 0x07), 0);
	assert_int_equal(srdma_wbuf_put_u8(&w, 0xaa), -ENOBUFS);
	assert_int_equal(srdma_wbuf_put_bytes(&w, "x", SIZE_MAX), -ENOBUFS);
	assert_int_equal(srdma_wbuf_put_bytes(&w, NULL, 0), 0);
	assert_int_equal(w.len, 7);
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(buf[7], SENTINEL);	/* past cap: never touched */
}

/* REKEY: OFFER and ANSWER name a QP, SWITCH and DONE nothing; anything else is out
 * of range, on both the encode and the decode side. */
static void rekey_round_trip_and_ranges(void **state)
{
	static const struct srdma_rekey_msg good[] = {
		{ SRDMA_REKEY_OFFER, 2, 0 }, { SRDMA_REKEY_OFFER, 0xffffff, 0xffffff },
		{ SRDMA_REKEY_ANSWER, 0x1234, 0xabcdef }, { SRDMA_REKEY_SWITCH, 0, 0 },
		{ SRDMA_REKEY_DONE, 0, 0 },
	};
	static const struct srdma_rekey_msg bad[] = {
		{ 0, 2, 0 }, { 5, 2, 0 }, { SRDMA_REKEY_OFFER, 1, 0 },
		{ SRDMA_REKEY_OFFER, 0x1000000, 0 }, { SRDMA_REKEY_ANSWER, 2, 0x1000000 },
		{ SRDMA_REKEY_SWITCH, 2, 0 }, { SRDMA_REKEY_SWITCH, 0, 1 },
		{ SRDMA_REKEY_DONE, 0, 1 },
	};
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	struct srdma_msg m, out;
	size_t len;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		m.type = SRDMA_MSG_REKEY;
		m.u.rekey = good[i];
		assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), 0);
		assert_int_equal(len, SRDMA_WIRE_HDR_LEN + 9);
		assert_int_equal(srdma_wire_decode_body(SRDMA_MSG_REKEY, buf + SRDMA_WIRE_HDR_LEN, 9,
							&out), 0);
		assert_int_equal(out.u.rekey.phase, good[i].phase);
		assert_int_equal(out.u.rekey.qpn, good[i].qpn);
		assert_int_equal(out.u.rekey.psn, good[i].psn);
		assert_int_equal(srdma_wire_decode_body(SRDMA_MSG_REKEY, buf + SRDMA_WIRE_HDR_LEN, 8,
							&out), -EBADMSG);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		uint8_t body[9] = { bad[i].phase };

		m.type = SRDMA_MSG_REKEY;
		m.u.rekey = bad[i];
		assert_int_equal(srdma_wire_encode(&m, buf, sizeof(buf), &len), -EINVAL);
		for (int k = 0; k < 4; k++) {
			body[1 + k] = (uint8_t)(bad[i].qpn >> (24 - 8 * k));
			body[5 + k] = (uint8_t)(bad[i].psn >> (24 - 8 * k));
		}
		assert_int_equal(srdma_wire_decode_body(SRDMA_MSG_REKEY, body, 9, &out), -ERANGE);
	}
}

static void names(void **state)
{
	(void)state;
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_HELLO), "HELLO");
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_PARAMS), "PARAMS");
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_READY), "READY");
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_ERROR), "ERROR");
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_BYE), "BYE");
	assert_string_equal(srdma_msg_type_name(0), "UNKNOWN");
	assert_string_equal(srdma_msg_type_name(SRDMA_MSG_REKEY), "REKEY");
	assert_string_equal(srdma_msg_type_name(9), "UNKNOWN");

	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_SERVER_FULL), "server full");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_VERSION), "version mismatch");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_BAD_MESSAGE), "bad message");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_TIMEOUT), "handshake timeout");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_RDMA_SETUP), "RDMA setup failed");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_INTERNAL), "internal error");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_UNEXPECTED), "unexpected message");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_SHUTDOWN), "shutting down");
	assert_string_equal(srdma_err_code_name(0), "unknown error");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_BINDING), "peer binding failed");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_PSN_MODE), "PSN mode mismatch");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_QP), "RDMA connection failed");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_NOT_RESPONDING), "not responding");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_SEAL_MODE), "seal mode mismatch");
	assert_string_equal(srdma_err_code_name(SRDMA_ERROR_SEAL), "sealed message rejected");
	assert_string_equal(srdma_err_code_name(15), "unknown error");
	assert_string_equal(srdma_err_code_name(0xffff), "unknown error");
}

/* ---- fuzz ---- */

#define FUZZ_ITERATIONS	200000
#define FUZZ_BUF	(SRDMA_WIRE_MAX_MSG + 16)

struct fuzz_stats {
	unsigned long accepted[SRDMA_MSG_LAST + 1];
	unsigned long ebadmsg, erange, eproto, emsgsize, short_frames;
};

/* xorshift64: deterministic, so a failure reproduces. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static uint32_t rnd_below(uint32_t n)
{
	return (uint32_t)(rnd() % n);
}

/* Values near the edges of the checks, where off-by-one mistakes live. */
static uint32_t edgy_u32(void)
{
	static const uint32_t edges[] = { 0, 1, 2, 3, 5, 6, 0xfffffe, 0xffffff, 0x1000000,
					  SRDMA_WIRE_MAX_WINDOW - 1, SRDMA_WIRE_MAX_WINDOW,
					  SRDMA_WIRE_MAX_WINDOW + 1, 0xffffffff };

	if (rnd_below(2))
		return edges[rnd_below(ARRAY_SIZE(edges))];
	return rnd_below(4) ? (uint32_t)rnd() & 0xffffff : (uint32_t)rnd();
}

static uint64_t edgy_addr(void)
{
	switch (rnd_below(4)) {
	case 0:
		return 0;
	case 1:
		return UINT64_MAX - rnd_below(SRDMA_WIRE_MAX_WINDOW + 2u);
	default:
		return rnd();
	}
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

/* A body of the right size for its type, with fields drawn near the edges. */
static size_t fuzz_structured_body(uint16_t type, uint8_t *body, size_t cap)
{
	struct srdma_wbuf w;
	uint8_t gid[16];
	size_t n;

	srdma_wbuf_init(&w, body, cap);
	switch (type) {
	case SRDMA_MSG_HELLO:
		assert_int_equal(srdma_wbuf_put_u16(&w, (uint16_t)rnd()), 0);
		assert_int_equal(srdma_wbuf_put_u32(&w, (uint32_t)rnd()), 0);
		break;
	case SRDMA_MSG_PARAMS:
		fill_random(gid, sizeof(gid));
		assert_int_equal(srdma_wbuf_put_u32(&w, edgy_u32()), 0);
		assert_int_equal(srdma_wbuf_put_u32(&w, edgy_u32()), 0);
		assert_int_equal(srdma_wbuf_put_u16(&w, (uint16_t)rnd()), 0);
		assert_int_equal(srdma_wbuf_put_bytes(&w, gid, sizeof(gid)), 0);
		assert_int_equal(srdma_wbuf_put_u8(&w, (uint8_t)rnd_below(8)), 0);
		assert_int_equal(srdma_wbuf_put_u64(&w, edgy_addr()), 0);
		assert_int_equal(srdma_wbuf_put_u32(&w, rnd_below(4) ? (uint32_t)rnd() : 0), 0);
		assert_int_equal(srdma_wbuf_put_u32(&w, edgy_u32()), 0);
		break;
	case SRDMA_MSG_REKEY:
		/* Phases 0..5 (1..4 valid); SWITCH and DONE must carry zeros. */
		assert_int_equal(srdma_wbuf_put_u8(&w, (uint8_t)rnd_below(6)), 0);
		assert_int_equal(srdma_wbuf_put_u32(&w, rnd_below(4) ? edgy_u32() : 0), 0);
		assert_int_equal(srdma_wbuf_put_u32(&w, rnd_below(4) ? edgy_u32() : 0), 0);
		break;
	case SRDMA_MSG_ERROR:
		assert_int_equal(srdma_wbuf_put_u16(&w, (uint16_t)rnd()), 0);
		n = rnd_below(SRDMA_WIRE_MAX_TEXT + 3);
		for (size_t i = 0; i < n; i++) {
			/* Mostly printable, with an occasional stray byte. */
			uint8_t ch = rnd_below(64) ? (uint8_t)(0x20 + rnd_below(0x5f))
						   : (uint8_t)rnd();

			assert_int_equal(srdma_wbuf_put_u8(&w, ch), 0);
		}
		break;
	default:
		break;
	}
	return w.len;
}

/* A header length: the true one, one that fits the limit, or one past it. */
static uint32_t fuzz_body_len(size_t have)
{
	switch (rnd_below(4)) {
	case 0:
		return (uint32_t)have;
	case 1:
		return rnd_below(2) ? SRDMA_WIRE_MAX_BODY + 1 + rnd_below(4) : (uint32_t)rnd();
	default:
		return rnd_below(SRDMA_WIRE_MAX_BODY + 1);
	}
}

/*
 * One input frame: a header and some bytes after it. Returns the total
 * length. Three shapes: pure noise, a well-formed frame with edgy fields,
 * and a well-formed frame with a few bytes flipped or its length nudged.
 */
static size_t fuzz_frame(uint8_t *buf)
{
	uint8_t *body = buf + SRDMA_WIRE_HDR_LEN;
	size_t cap = FUZZ_BUF - SRDMA_WIRE_HDR_LEN, n;
	uint16_t type;

	switch (rnd_below(3)) {
	case 0:
		n = rnd_below(FUZZ_BUF + 1);
		fill_random(buf, n);
		if (n >= SRDMA_WIRE_HDR_LEN && rnd_below(2)) {
			/* Noise with a plausible type and length, or it never gets past the header. */
			type = (uint16_t)rnd_below(SRDMA_MSG_LAST + 2);
			put_header(buf, type, fuzz_body_len(n - SRDMA_WIRE_HDR_LEN));
		}
		return n;
	default:
		type = (uint16_t)rnd_below(SRDMA_MSG_LAST + 2);
		n = fuzz_structured_body(type, body, cap);
		if (rnd_below(2)) {
			for (uint32_t k = rnd_below(4) + 1; k > 0 && n > 0; k--)
				body[rnd_below((uint32_t)n)] ^= (uint8_t)(1u << rnd_below(8));
		}
		if (rnd_below(8) == 0) {
			n = rnd_below(n + 2);	/* cut short, or one byte long */
			body[n ? n - 1 : 0] = (uint8_t)rnd();
		}
		put_header(buf, type, (uint32_t)n);
		if (rnd_below(16) == 0)
			buf[rnd_below(SRDMA_WIRE_HDR_LEN)] ^= (uint8_t)(1u << rnd_below(8));
		return SRDMA_WIRE_HDR_LEN + n;
	}
}

static void fuzz_count_error(struct fuzz_stats *st, int rc)
{
	switch (rc) {
	case -EBADMSG:
		st->ebadmsg++;
		break;
	case -ERANGE:
		st->erange++;
		break;
	case -EPROTO:
		st->eproto++;
		break;
	case -EMSGSIZE:
		st->emsgsize++;
		break;
	default:
		fail_msg("unexpected decode result %d", rc);
	}
}

/*
 * The strong property: a body is accepted only if encoding what was decoded
 * gives back exactly the same bytes. No trailing junk, no ignored bits, no
 * two wire forms for one message.
 */
static void fuzz_one(const uint8_t *buf, size_t n, struct fuzz_stats *st)
{
	uint8_t out[SRDMA_WIRE_MAX_MSG];
	struct srdma_msg m;
	uint32_t body_len;
	size_t avail, out_len = 0;
	bool short_frame;
	uint16_t type;
	int rc;

	if (n < SRDMA_WIRE_HDR_LEN)
		return;
	rc = srdma_wire_decode_header(buf, &type, &body_len);
	if (rc) {
		fuzz_count_error(st, rc);
		return;
	}
	assert_in_range(type, SRDMA_MSG_HELLO, SRDMA_MSG_LAST);
	assert_true(body_len <= SRDMA_WIRE_MAX_BODY);
	avail = n - SRDMA_WIRE_HDR_LEN;
	short_frame = body_len > avail;
	if (short_frame) {
		/* A short read on the real channel; still feed what there is. */
		st->short_frames++;
		body_len = (uint32_t)avail;
	}
	rc = srdma_wire_decode_body(type, buf + SRDMA_WIRE_HDR_LEN, body_len, &m);
	if (rc) {
		fuzz_count_error(st, rc);
		return;
	}
	assert_int_equal(m.type, type);
	assert_int_equal(srdma_wire_encode(&m, out, sizeof(out), &out_len), 0);
	assert_int_equal(out_len, SRDMA_WIRE_HDR_LEN + body_len);
	assert_memory_equal(out + SRDMA_WIRE_HDR_LEN, buf + SRDMA_WIRE_HDR_LEN, body_len);
	if (short_frame)
		assert_memory_equal(out, buf, 2);	/* the type; the length was cut */
	else
		assert_memory_equal(out, buf, SRDMA_WIRE_HDR_LEN + body_len);
	st->accepted[type]++;
}

static void fuzz_decode_is_canonical(void **state)
{
	(void)state;
	static uint8_t buf[FUZZ_BUF];
	struct fuzz_stats st = { 0 };

	rnd_state = 0x9e3779b97f4a7c15ull;
	for (unsigned long i = 0; i < FUZZ_ITERATIONS; i++)
		fuzz_one(buf, fuzz_frame(buf), &st);

	print_message("  accepted HELLO %lu PARAMS %lu READY %lu ERROR %lu BYE %lu PING %lu PONG %lu "
		      "REKEY %lu\n",
		      st.accepted[SRDMA_MSG_HELLO], st.accepted[SRDMA_MSG_PARAMS],
		      st.accepted[SRDMA_MSG_READY], st.accepted[SRDMA_MSG_ERROR],
		      st.accepted[SRDMA_MSG_BYE], st.accepted[SRDMA_MSG_PING],
		      st.accepted[SRDMA_MSG_PONG], st.accepted[SRDMA_MSG_REKEY]);
	print_message("  rejected EBADMSG %lu ERANGE %lu EPROTO %lu EMSGSIZE %lu (short %lu)\n",
		      st.ebadmsg, st.erange, st.eproto, st.emsgsize, st.short_frames);
	/* The loop must reach both sides of every check, or it proves nothing. */
	for (uint16_t t = SRDMA_MSG_HELLO; t <= SRDMA_MSG_LAST; t++)
		assert_true(st.accepted[t] >= 1000);
	assert_true(st.ebadmsg >= 1000);
	assert_true(st.erange >= 1000);
	assert_true(st.eproto >= 1000);
	assert_true(st.emsgsize >= 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip_hello),
		cmocka_unit_test(round_trip_params_edges),
		cmocka_unit_test(round_trip_ready_and_bye),
		cmocka_unit_test(round_trip_error),
		cmocka_unit_test(params_encoding_is_big_endian),
		cmocka_unit_test(small_messages_encode_exactly),
		cmocka_unit_test(truncated_and_long_bodies_rejected),
		cmocka_unit_test(error_text_is_the_rest_of_the_body),
		cmocka_unit_test(header_body_len_limits),
		cmocka_unit_test(unknown_types_rejected),
		cmocka_unit_test(params_range_violations_rejected),
		cmocka_unit_test(params_range_edges_accepted),
		cmocka_unit_test(error_text_rejected),
		cmocka_unit_test(encode_short_buffers_rejected),
		cmocka_unit_test(cursor_gets_at_end_leave_pos),
		cmocka_unit_test(cursor_reads_big_endian_u64),
		cmocka_unit_test(wbuf_puts_past_cap_leave_buffer),
		cmocka_unit_test(names),
		cmocka_unit_test(rekey_round_trip_and_ranges),
		cmocka_unit_test(fuzz_decode_is_canonical),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
