/*
 * Control-message codec for the TLS control channel (see wire.h and
 * docs/PROTOCOL.md). Everything decoded here was written by the peer, so it
 * is parsed the OpenSSH sshbuf / s2n stuffer way: the bytes available are
 * checked before every read, lengths are compared with exact or small fixed
 * limits before anything is copied, and every field is range-checked before
 * the message leaves this file. Encoding runs the same checks, so we never
 * send what we would refuse to receive.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "wire.h"

/* Exact body sizes; ERROR is a u16 code followed by 0..MAX_TEXT text bytes. */
#define HELLO_BODY_LEN		6	/* u16 version, u32 caps */
#define PARAMS_BODY_LEN		43	/* 4 + 4 + 2 + 16 + 1 + 8 + 4 + 4 */
#define EMPTY_BODY_LEN		0	/* READY, BYE, PING, PONG */
#define REKEY_BODY_LEN		9	/* u8 phase, u32 qpn, u32 psn */
#define ERROR_CODE_LEN		2

#define QPN_MIN			2u	/* QPN 0 (SMI) and 1 (GSI) are reserved */
#define QPN_MAX			0xffffffu
#define PSN_MAX			0xffffffu
#define MTU_MIN			1u	/* IBV_MTU_256 */
#define MTU_MAX			5u	/* IBV_MTU_4096 */

/* ---- read cursor ---- */

void srdma_cursor_init(struct srdma_cursor *c, const void *p, size_t len)
{
	c->p = p;
	c->len = len;
	c->pos = 0;
}

size_t srdma_cursor_left(const struct srdma_cursor *c)
{
	/* pos never passes len through this API; stay safe if a caller broke that. */
	return c->pos < c->len ? c->len - c->pos : 0;
}

/* Big-endian load of n <= 8 bytes; the caller has checked they exist. */
static uint64_t load_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Read n bytes as a big-endian integer. The length test comes before any
 * pointer arithmetic, so a short buffer leaves the cursor where it was.
 */
static int cursor_get_be(struct srdma_cursor *c, size_t n, uint64_t *v)
{
	if (n > srdma_cursor_left(c))
		return -EBADMSG;
	*v = load_be(c->p + c->pos, n);
	c->pos += n;
	return 0;
}

int srdma_cursor_get_u8(struct srdma_cursor *c, uint8_t *v)
{
	uint64_t x;
	int rc = cursor_get_be(c, 1, &x);

	if (!rc)
		*v = (uint8_t)x;
	return rc;
}

int srdma_cursor_get_u16(struct srdma_cursor *c, uint16_t *v)
{
	uint64_t x;
	int rc = cursor_get_be(c, 2, &x);

	if (!rc)
		*v = (uint16_t)x;
	return rc;
}

int srdma_cursor_get_u32(struct srdma_cursor *c, uint32_t *v)
{
	uint64_t x;
	int rc = cursor_get_be(c, 4, &x);

	if (!rc)
		*v = (uint32_t)x;
	return rc;
}

int srdma_cursor_get_u64(struct srdma_cursor *c, uint64_t *v)
{
	return cursor_get_be(c, 8, v);
}

int srdma_cursor_get_bytes(struct srdma_cursor *c, void *out, size_t n)
{
	if (n > srdma_cursor_left(c))
		return -EBADMSG;
	if (n)	/* memcpy() from or to NULL is undefined even for 0 bytes */
		memcpy(out, c->p + c->pos, n);
	c->pos += n;
	return 0;
}

/* ---- write buffer ---- */

void srdma_wbuf_init(struct srdma_wbuf *w, void *p, size_t cap)
{
	w->p = p;
	w->cap = cap;
	w->len = 0;
}

/* Written as a subtraction so that a huge n cannot wrap len + n. */
static bool wbuf_has_room(const struct srdma_wbuf *w, size_t n)
{
	return w->len <= w->cap && n <= w->cap - w->len;
}

static int wbuf_put_be(struct srdma_wbuf *w, uint64_t v, size_t n)
{
	if (!wbuf_has_room(w, n))
		return -ENOBUFS;
	for (size_t i = 0; i < n; i++)
		w->p[w->len + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	w->len += n;
	return 0;
}

int srdma_wbuf_put_u8(struct srdma_wbuf *w, uint8_t v)
{
	return wbuf_put_be(w, v, 1);
}

int srdma_wbuf_put_u16(struct srdma_wbuf *w, uint16_t v)
{
	return wbuf_put_be(w, v, 2);
}

int srdma_wbuf_put_u32(struct srdma_wbuf *w, uint32_t v)
{
	return wbuf_put_be(w, v, 4);
}

int srdma_wbuf_put_u64(struct srdma_wbuf *w, uint64_t v)
{
	return wbuf_put_be(w, v, 8);
}

int srdma_wbuf_put_bytes(struct srdma_wbuf *w, const void *p, size_t n)
{
	if (!wbuf_has_room(w, n))
		return -ENOBUFS;
	if (n)
		memcpy(w->p + w->len, p, n);
	w->len += n;
	return 0;
}

/* ---- validation shared by encode and decode ---- */

static bool msg_type_known(uint16_t type)
{
	return type >= SRDMA_MSG_HELLO && type <= SRDMA_MSG_LAST;
}

/*
 * ERROR text ends up in logs and on terminals: printable ASCII only, so a
 * peer cannot smuggle in escape sequences, newlines or a NUL that would cut
 * the text short (and break the one-encoding-per-message property).
 */
static bool text_printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch > 0x7e)
			return false;
	}
	return true;
}

/*
 * A window is either absent (addr, rkey and len all 0) or a non-empty range
 * that fits in the address space and stays under the size we accept. The
 * verbs layer uses these values for an MR and for remote addresses, so they
 * are settled here, once, for every user.
 */
static bool window_valid(const struct srdma_params *pm)
{
	if (pm->len == 0)
		return pm->addr == 0 && pm->rkey == 0;
	if (pm->len > SRDMA_WIRE_MAX_WINDOW)
		return false;
	return pm->addr <= UINT64_MAX - pm->len;
}

/* OFFER and ANSWER name a QP; SWITCH and DONE name nothing. */
static bool rekey_valid(const struct srdma_rekey_msg *r)
{
	switch (r->phase) {
	case SRDMA_REKEY_OFFER:
	case SRDMA_REKEY_ANSWER:
		return r->qpn >= QPN_MIN && r->qpn <= QPN_MAX && r->psn <= PSN_MAX;
	case SRDMA_REKEY_SWITCH:
	case SRDMA_REKEY_DONE:
		return r->qpn == 0 && r->psn == 0;
	default:
		return false;
	}
}

static bool params_valid(const struct srdma_params *pm)
{
	if (pm->qpn < QPN_MIN || pm->qpn > QPN_MAX)
		return false;
	if (pm->psn > PSN_MAX)
		return false;
	if (pm->mtu < MTU_MIN || pm->mtu > MTU_MAX)
		return false;
	return window_valid(pm);
}

/*
 * Check a message we are about to send and work out its body length. The
 * rules are the decoder's, so a peer running this code never gets a message
 * from us that it must reject.
 */
static int msg_body_len(const struct srdma_msg *m, size_t *len)
{
	size_t n;

	switch (m->type) {
	case SRDMA_MSG_HELLO:
		*len = HELLO_BODY_LEN;
		return 0;
	case SRDMA_MSG_PARAMS:
		if (!params_valid(&m->u.params))
			return -EINVAL;
		*len = PARAMS_BODY_LEN;
		return 0;
	case SRDMA_MSG_READY:
	case SRDMA_MSG_BYE:
	case SRDMA_MSG_PING:
	case SRDMA_MSG_PONG:
		*len = EMPTY_BODY_LEN;
		return 0;
	case SRDMA_MSG_REKEY:
		if (!rekey_valid(&m->u.rekey))
			return -EINVAL;
		*len = REKEY_BODY_LEN;
		return 0;
	case SRDMA_MSG_ERROR:
		/* No NUL within the array means the text is too long (or garbage). */
		n = strnlen(m->u.error.text, sizeof(m->u.error.text));
		if (n > SRDMA_WIRE_MAX_TEXT || !text_printable(m->u.error.text, n))
			return -EINVAL;
		*len = ERROR_CODE_LEN + n;
		return 0;
	default:
		return -EINVAL;
	}
}

/* ---- encode ---- */

static int put_hello(struct srdma_wbuf *w, const struct srdma_hello *h)
{
	int rc = srdma_wbuf_put_u16(w, h->version);

	if (!rc)
		rc = srdma_wbuf_put_u32(w, h->caps);
	return rc;
}

static int put_params(struct srdma_wbuf *w, const struct srdma_params *pm)
{
	int rc = srdma_wbuf_put_u32(w, pm->qpn);

	if (!rc)
		rc = srdma_wbuf_put_u32(w, pm->psn);
	if (!rc)
		rc = srdma_wbuf_put_u16(w, pm->lid);
	if (!rc)
		rc = srdma_wbuf_put_bytes(w, pm->gid, sizeof(pm->gid));
	if (!rc)
		rc = srdma_wbuf_put_u8(w, pm->mtu);
	if (!rc)
		rc = srdma_wbuf_put_u64(w, pm->addr);
	if (!rc)
		rc = srdma_wbuf_put_u32(w, pm->rkey);
	if (!rc)
		rc = srdma_wbuf_put_u32(w, pm->len);
	return rc;
}

static int put_error(struct srdma_wbuf *w, const struct srdma_error_msg *e, size_t text_len)
{
	int rc = srdma_wbuf_put_u16(w, e->code);

	if (!rc)
		rc = srdma_wbuf_put_bytes(w, e->text, text_len);
	return rc;
}

static int put_rekey(struct srdma_wbuf *w, const struct srdma_rekey_msg *r)
{
	int rc = srdma_wbuf_put_u8(w, r->phase);

	if (!rc)
		rc = srdma_wbuf_put_u32(w, r->qpn);
	if (!rc)
		rc = srdma_wbuf_put_u32(w, r->psn);
	return rc;
}

static int put_body(struct srdma_wbuf *w, const struct srdma_msg *m, size_t body_len)
{
	switch (m->type) {
	case SRDMA_MSG_HELLO:
		return put_hello(w, &m->u.hello);
	case SRDMA_MSG_PARAMS:
		return put_params(w, &m->u.params);
	case SRDMA_MSG_ERROR:
		return put_error(w, &m->u.error, body_len - ERROR_CODE_LEN);
	case SRDMA_MSG_REKEY:
		return put_rekey(w, &m->u.rekey);
	default:	/* READY, BYE, PING, PONG: empty */
		return 0;
	}
}

int srdma_wire_encode(const struct srdma_msg *m, void *buf, size_t cap, size_t *out_len)
{
	struct srdma_wbuf w;
	size_t body_len;
	int rc;

	rc = msg_body_len(m, &body_len);
	if (rc)
		return rc;
	/* Checked up front so that a short buffer is left untouched. */
	if (cap < SRDMA_WIRE_HDR_LEN + body_len)
		return -ENOBUFS;

	srdma_wbuf_init(&w, buf, cap);
	rc = srdma_wbuf_put_u16(&w, m->type);
	if (!rc)
		rc = srdma_wbuf_put_u32(&w, (uint32_t)body_len);
	if (!rc)
		rc = put_body(&w, m, body_len);
	if (rc)
		return rc;
	*out_len = w.len;
	return 0;
}

/* ---- decode ---- */

int srdma_wire_decode_header(const uint8_t hdr[SRDMA_WIRE_HDR_LEN], uint16_t *type,
			     uint32_t *body_len)
{
	struct srdma_cursor c;
	uint16_t t;
	uint32_t n;
	int rc;

	srdma_cursor_init(&c, hdr, SRDMA_WIRE_HDR_LEN);
	rc = srdma_cursor_get_u16(&c, &t);
	if (!rc)
		rc = srdma_cursor_get_u32(&c, &n);
	if (rc)
		return rc;
	if (!msg_type_known(t))
		return -EPROTO;
	/* The caller sizes its read from body_len: cap it before it is used. */
	if (n > SRDMA_WIRE_MAX_BODY)
		return -EMSGSIZE;
	*type = t;
	*body_len = n;
	return 0;
}

/*
 * Each type has one exact body length (ERROR: a bounded range). Checking it
 * before parsing means the field reads below cannot run short, and trailing
 * bytes, which would give one message two encodings, are refused.
 */
static int body_len_ok(uint16_t type, size_t len)
{
	switch (type) {
	case SRDMA_MSG_HELLO:
		return len == HELLO_BODY_LEN ? 0 : -EBADMSG;
	case SRDMA_MSG_PARAMS:
		return len == PARAMS_BODY_LEN ? 0 : -EBADMSG;
	case SRDMA_MSG_READY:
	case SRDMA_MSG_BYE:
	case SRDMA_MSG_PING:
	case SRDMA_MSG_PONG:
		return len == EMPTY_BODY_LEN ? 0 : -EBADMSG;
	case SRDMA_MSG_REKEY:
		return len == REKEY_BODY_LEN ? 0 : -EBADMSG;
	case SRDMA_MSG_ERROR:
		if (len < ERROR_CODE_LEN || len - ERROR_CODE_LEN > SRDMA_WIRE_MAX_TEXT)
			return -EBADMSG;
		return 0;
	default:
		return -EPROTO;
	}
}

/* Any version and any cap bits decode: the caller compares and masks them. */
static int get_hello(struct srdma_cursor *c, struct srdma_hello *h)
{
	int rc = srdma_cursor_get_u16(c, &h->version);

	if (!rc)
		rc = srdma_cursor_get_u32(c, &h->caps);
	return rc;
}

static int get_params(struct srdma_cursor *c, struct srdma_params *pm)
{
	int rc = srdma_cursor_get_u32(c, &pm->qpn);

	if (!rc)
		rc = srdma_cursor_get_u32(c, &pm->psn);
	if (!rc)
		rc = srdma_cursor_get_u16(c, &pm->lid);
	if (!rc)
		rc = srdma_cursor_get_bytes(c, pm->gid, sizeof(pm->gid));
	if (!rc)
		rc = srdma_cursor_get_u8(c, &pm->mtu);
	if (!rc)
		rc = srdma_cursor_get_u64(c, &pm->addr);
	if (!rc)
		rc = srdma_cursor_get_u32(c, &pm->rkey);
	if (!rc)
		rc = srdma_cursor_get_u32(c, &pm->len);
	if (rc)
		return rc;
	return params_valid(pm) ? 0 : -ERANGE;
}

static int get_rekey(struct srdma_cursor *c, struct srdma_rekey_msg *r)
{
	int rc = srdma_cursor_get_u8(c, &r->phase);

	if (!rc)
		rc = srdma_cursor_get_u32(c, &r->qpn);
	if (!rc)
		rc = srdma_cursor_get_u32(c, &r->psn);
	if (rc)
		return rc;
	return rekey_valid(r) ? 0 : -ERANGE;
}

/* e->text must be zeroed: it gets the text bytes and keeps a NUL after them. */
static int get_error(struct srdma_cursor *c, struct srdma_error_msg *e)
{
	size_t n;
	int rc;

	rc = srdma_cursor_get_u16(c, &e->code);
	if (rc)
		return rc;
	n = srdma_cursor_left(c);
	if (n > SRDMA_WIRE_MAX_TEXT)	/* body_len_ok() did this; the copy relies on it */
		return -EBADMSG;
	rc = srdma_cursor_get_bytes(c, e->text, n);
	if (rc)
		return rc;
	return text_printable(e->text, n) ? 0 : -EBADMSG;
}

int srdma_wire_decode_body(uint16_t type, const void *body, size_t len, struct srdma_msg *m)
{
	struct srdma_msg tmp;
	struct srdma_cursor c;
	int rc;

	rc = body_len_ok(type, len);
	if (rc)
		return rc;

	/* Decode into a zeroed copy: m is written only once the whole message is good. */
	memset(&tmp, 0, sizeof(tmp));
	tmp.type = type;
	srdma_cursor_init(&c, body, len);
	switch (type) {
	case SRDMA_MSG_HELLO:
		rc = get_hello(&c, &tmp.u.hello);
		break;
	case SRDMA_MSG_PARAMS:
		rc = get_params(&c, &tmp.u.params);
		break;
	case SRDMA_MSG_ERROR:
		rc = get_error(&c, &tmp.u.error);
		break;
	case SRDMA_MSG_REKEY:
		rc = get_rekey(&c, &tmp.u.rekey);
		break;
	default:	/* READY, BYE, PING, PONG: empty, already length-checked */
		break;
	}
	if (rc)
		return rc;
	/* Belt and braces: the exact length check should leave nothing unread. */
	if (srdma_cursor_left(&c) != 0)
		return -EBADMSG;
	*m = tmp;
	return 0;
}

/* ---- names for logs ---- */

const char *srdma_wire_error_text(int rc)
{
	switch (rc) {
	case -EPROTO:
		return "unknown message type";
	case -EMSGSIZE:
		return "longer than any message";
	case -EBADMSG:
		return "wrong length, or text that is not printable ASCII";
	case -ERANGE:
		return "a field out of range";
	default:
		return strerror(-rc);
	}
}

const char *srdma_msg_type_name(uint16_t type)
{
	switch (type) {
	case SRDMA_MSG_HELLO:
		return "HELLO";
	case SRDMA_MSG_PARAMS:
		return "PARAMS";
	case SRDMA_MSG_READY:
		return "READY";
	case SRDMA_MSG_ERROR:
		return "ERROR";
	case SRDMA_MSG_BYE:
		return "BYE";
	case SRDMA_MSG_PING:
		return "PING";
	case SRDMA_MSG_PONG:
		return "PONG";
	case SRDMA_MSG_REKEY:
		return "REKEY";
	default:
		return "UNKNOWN";
	}
}

const char *srdma_err_code_name(uint16_t code)
{
	switch (code) {
	case SRDMA_ERROR_SERVER_FULL:
		return "server full";
	case SRDMA_ERROR_VERSION:
		return "version mismatch";
	case SRDMA_ERROR_BAD_MESSAGE:
		return "bad message";
	case SRDMA_ERROR_TIMEOUT:
		return "handshake timeout";
	case SRDMA_ERROR_RDMA_SETUP:
		return "RDMA setup failed";
	case SRDMA_ERROR_INTERNAL:
		return "internal error";
	case SRDMA_ERROR_UNEXPECTED:
		return "unexpected message";
	case SRDMA_ERROR_SHUTDOWN:
		return "shutting down";
	case SRDMA_ERROR_BINDING:
		return "peer binding failed";
	case SRDMA_ERROR_PSN_MODE:
		return "PSN mode mismatch";
	case SRDMA_ERROR_QP:
		return "RDMA connection failed";
	case SRDMA_ERROR_NOT_RESPONDING:
		return "not responding";
	case SRDMA_ERROR_SEAL_MODE:
		return "seal mode mismatch";
	case SRDMA_ERROR_SEAL:
		return "sealed message rejected";
	default:
		return "unknown error";
	}
}
