/*
 * The handshake after TLS, and the control channel afterwards.
 *
 *   client                         server
 *   HELLO(version, caps)     ->
 *   PARAMS(qpn, psn, ...)    ->
 *                            <-    HELLO(version, caps)
 *                                  QP: INIT -> RTR(client psn) -> RTS(own psn)
 *                            <-    PARAMS(qpn, psn, window ...)
 *   QP: RTR -> RTS, verified
 *   binding SEND (RDMA)      =>    verified
 *   verified                 <=    binding SEND (RDMA)
 *
 * Every message is decoded with bounds checks (wire.c); anything invalid or
 * out of order is answered with ERROR and the connection is closed.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "srdma_internal.h"

int srdma_ctrl_send(struct srdma_conn *c, const struct srdma_msg *m,
		    int64_t deadline, struct srdma_err *err)
{
	uint8_t buf[SRDMA_WIRE_MAX_MSG];
	size_t len;
	int rc = srdma_wire_encode(m, buf, sizeof(buf), &len);

	if (rc) {
		srdma_set_err(err, rc, "send control message", "cannot encode %s: %s",
			      srdma_msg_type_name(m->type), strerror(-rc));
		return rc;
	}
	return srdma_tls_write(c->ssl, buf, len, deadline, err);
}

int srdma_ctrl_send_error(struct srdma_conn *c, uint16_t code,
			  const char *text, int64_t deadline)
{
	struct srdma_msg m = { .type = SRDMA_MSG_ERROR };

	m.u.error.code = code;
	snprintf(m.u.error.text, sizeof(m.u.error.text), "%s",
		 text ? text : srdma_err_code_name(code));
	/* Keep only printable ASCII: the text may quote something local. */
	for (char *p = m.u.error.text; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			*p = '?';
	return srdma_ctrl_send(c, &m, deadline, NULL);
}

static int bad_message(struct srdma_conn *c, int rc, const char *what,
		       int64_t deadline, struct srdma_err *err)
{
	srdma_set_err(err, rc, "read control message", "%s: %s", what,
		      srdma_wire_error_text(rc));
	srdma_ctrl_send_error(c, SRDMA_ERROR_BAD_MESSAGE, NULL, deadline);
	return rc;
}

int srdma_ctrl_recv(struct srdma_conn *c, struct srdma_msg *m,
		    int64_t deadline, struct srdma_err *err)
{
	uint8_t hdr[SRDMA_WIRE_HDR_LEN], body[SRDMA_WIRE_MAX_BODY];
	uint16_t type;
	uint32_t len;
	int rc = srdma_tls_read(c->ssl, hdr, sizeof(hdr), deadline, err);

	if (rc)
		return rc;
	rc = srdma_wire_decode_header(hdr, &type, &len);
	if (rc)
		return bad_message(c, rc, "invalid header", deadline, err);
	rc = srdma_tls_read(c->ssl, body, len, deadline, err);
	if (rc)
		return rc;
	rc = srdma_wire_decode_body(type, body, len, m);
	if (rc)
		return bad_message(c, rc, srdma_msg_type_name(type), deadline, err);
	return 0;
}

/* Receive a message of the expected type; a peer ERROR becomes err. */
static int expect(struct srdma_conn *c, uint16_t type, struct srdma_msg *m,
		  int64_t deadline, struct srdma_err *err)
{
	int rc = srdma_ctrl_recv(c, m, deadline, err);

	if (rc)
		return rc;
	if (m->type == type)
		return 0;
	if (m->type == SRDMA_MSG_ERROR) {
		srdma_set_err(err, -ECONNREFUSED, "peer refused", "%s",
			      m->u.error.text[0] ? m->u.error.text :
			      srdma_err_code_name(m->u.error.code));
		if (err)
			err->peer_code = m->u.error.code;
		return -ECONNREFUSED;
	}
	if (m->type == SRDMA_MSG_BYE) {
		srdma_set_err(err, -ECONNRESET, "handshake",
			      "the peer closed the connection (BYE) before setup finished");
		return -ECONNRESET;
	}
	srdma_set_err(err, -EPROTO, "handshake", "expected %s, got %s",
		      srdma_msg_type_name(type), srdma_msg_type_name(m->type));
	srdma_ctrl_send_error(c, SRDMA_ERROR_UNEXPECTED, NULL, deadline);
	return -EPROTO;
}

static uint32_t seal_cap(enum srdma_seal_cipher cipher)
{
	return cipher == SRDMA_SEAL_AES_256_GCM ? SRDMA_CAP_SEAL_AES_256_GCM :
	       cipher == SRDMA_SEAL_CHACHA20_POLY1305 ? SRDMA_CAP_SEAL_CHACHA20 : 0;
}

static const char *seal_cap_name(uint32_t caps)
{
	switch (caps & SRDMA_CAP_SEAL_MASK) {
	case 0:
		return "does not seal";
	case SRDMA_CAP_SEAL_AES_256_GCM:
		return "seals with aes-256-gcm";
	case SRDMA_CAP_SEAL_CHACHA20:
		return "seals with chacha20-poly1305";
	default:
		return "names two ciphers";
	}
}

static int send_hello(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	struct srdma_msg m = { .type = SRDMA_MSG_HELLO };

	m.u.hello.version = SRDMA_WIRE_VERSION;
	m.u.hello.caps = (c->server ? SRDMA_CAP_WRITE_WINDOW : 0) | SRDMA_CAP_PING;
	if (c->shape.psn_mode == SRDMA_PSN_EXPORTER)
		m.u.hello.caps |= SRDMA_CAP_PSN_EXPORTER;
	m.u.hello.caps |= seal_cap(c->shape.seal);
	if (c->shape.rekey && !c->shape.sh)
		m.u.hello.caps |= SRDMA_CAP_REKEY;
	return srdma_ctrl_send(c, &m, deadline, err);
}

static int check_hello(struct srdma_conn *c, const struct srdma_hello *h,
		       int64_t deadline, struct srdma_err *err)
{
	bool peer_exporter = h->caps & SRDMA_CAP_PSN_EXPORTER;

	c->peer_window = h->caps & SRDMA_CAP_WRITE_WINDOW;
	c->peer_pings = h->caps & SRDMA_CAP_PING;
	/* Both opted in, or neither QP is ever replaced. */
	c->rk.peer_can = (h->caps & SRDMA_CAP_REKEY) && c->shape.rekey && !c->shape.sh;

	if (h->version != SRDMA_WIRE_VERSION) {
		srdma_set_err(err, -EPROTONOSUPPORT, "handshake",
			      "peer speaks protocol version %u, we speak %u",
			      h->version, SRDMA_WIRE_VERSION);
		srdma_ctrl_send_error(c, SRDMA_ERROR_VERSION, NULL, deadline);
		return -EPROTONOSUPPORT;
	}
	if (peer_exporter != (c->shape.psn_mode == SRDMA_PSN_EXPORTER)) {
		srdma_set_err(err, -EPROTO, "handshake",
			      "PSN mode mismatch: we use %s, the peer %s",
			      c->shape.psn_mode == SRDMA_PSN_EXPORTER ? "exporter" : "exchange",
			      peer_exporter ? "exporter" : "exchange");
		srdma_ctrl_send_error(c, SRDMA_ERROR_PSN_MODE, NULL, deadline);
		return -EPROTO;
	}
	if ((h->caps & SRDMA_CAP_SEAL_MASK) != seal_cap(c->shape.seal)) {
		char text[SRDMA_WIRE_MAX_TEXT];

		snprintf(text, sizeof(text), "seal mode mismatch: the %s %s, the %s %s",
			 c->server ? "server" : "client", seal_cap_name(seal_cap(c->shape.seal)),
			 c->server ? "client" : "server", seal_cap_name(h->caps));
		srdma_set_err(err, -EPROTO, "handshake", "%s", text);
		srdma_ctrl_send_error(c, SRDMA_ERROR_SEAL_MODE, text, deadline);
		return -EPROTO;
	}
	return 0;
}

static int send_params(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	struct srdma_msg m = { .type = SRDMA_MSG_PARAMS };

	m.u.params = c->local;
	if (c->shape.psn_mode == SRDMA_PSN_EXPORTER)
		m.u.params.psn = 0;	/* derived on both sides, never sent */
	return srdma_ctrl_send(c, &m, deadline, err);
}

static int send_empty(struct srdma_conn *c, uint16_t type, int64_t deadline,
		      struct srdma_err *err)
{
	struct srdma_msg m = { .type = type };

	return srdma_ctrl_send(c, &m, deadline, err);
}

/* Local RDMA failure: tell the peer (without details), keep ours. */
static int rdma_failed(struct srdma_conn *c, int rc, int64_t deadline)
{
	srdma_ctrl_send_error(c, SRDMA_ERROR_RDMA_SETUP, NULL, deadline);
	return rc;
}

/* Our side's QP, buffers and PSN; the window only on the server. The QP
 * may be made already: the client makes it during the TLS handshake. */
static int make_qp(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	int64_t t0 = srdma_now_us();
	int rc = 0;

	if (!c->qp && !(c->server && c->listener && srdma_pool_take(c->listener, c)))
		rc = srdma_verbs_create(c, c->server, err);

	if (!rc)
		rc = srdma_verbs_local_params(c, err);
	c->info.times.qp_create_us += srdma_us_since(t0);
	return rc ? rdma_failed(c, rc, deadline) : 0;
}

/* The peer's PARAMS, then our QP to RTR and RTS with them, verified. */
static int connect_to_peer(struct srdma_conn *c, int64_t deadline,
			   struct srdma_err *err)
{
	struct srdma_msg m;
	int64_t t0;
	int rc = expect(c, SRDMA_MSG_PARAMS, &m, deadline, err);

	if (rc)
		return rc;
	c->remote = m.u.params;
	/* A window exactly when the HELLO offered one (the server's, never
	 * the client's): an offer without one, or one not offered, is a
	 * peer that does not follow the protocol. */
	if ((c->remote.len != 0) != (c->peer_window && !c->server)) {
		srdma_set_err(err, -EPROTO, "handshake", "the peer's PARAMS %s a write window %s",
			      c->remote.len ? "carry" : "lack",
			      c->remote.len ? "it did not offer" : "its HELLO offered");
		srdma_ctrl_send_error(c, SRDMA_ERROR_BAD_MESSAGE, NULL, deadline);
		return -EPROTO;
	}
	if (c->shape.psn_mode == SRDMA_PSN_EXPORTER) {
		if (c->remote.psn != 0) {
			srdma_set_err(err, -EPROTO, "handshake",
				      "peer sent a PSN in exporter mode");
			srdma_ctrl_send_error(c, SRDMA_ERROR_BAD_MESSAGE, NULL, deadline);
			return -EPROTO;
		}
		c->remote.psn = c->exporter_peer_psn;
	}
	t0 = srdma_now_us();
	rc = srdma_verbs_connect(c, err);
	c->info.times.qp_connect_us = srdma_us_since(t0);
	return rc ? rdma_failed(c, rc, deadline) : 0;
}

/* Our binding message, SENT; its completion taken from the send CQ only: a
 * receive that arrives meanwhile stays in the receive CQ for whoever reads
 * it next (on the server, the client's first real message, which belongs
 * to the program). */
static int send_binding(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	/* Shared mode (the server, which has no send slots): from the pool
	 * slot the client's binding message came in, still held. */
	const struct srdma_buf *b = c->shape.sh ? &c->recv_buf : &c->send_buf;
	uint8_t *msg = (uint8_t *)b->addr +
		       (c->shape.sh ? (size_t)c->bind_slot * c->shape.buf_size : 0);
	struct ibv_sge sge = { .addr = (uintptr_t)msg, .length = SRDMA_BINDING_LEN,
			       .lkey = b->lkey };
	struct ibv_send_wr wr = { .wr_id = 0, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct ibv_wc wc;
	int rc = srdma_binding_make(c->ssl, c->server, &c->local, &c->remote, msg, err);

	if (rc)
		return rc;
	if (srdma_binding_fault == 3) {		/* tests: gone without a word */
		shutdown(c->fd, SHUT_RDWR);
		srdma_set_err(err, -ECONNRESET, "peer binding", "vanished (test)");
		return -ECONNRESET;
	}
	rc = ibv_post_send(c->qp, &wr, &bad);
	if (rc) {
		srdma_set_err(err, -rc, "peer binding", "post send: %s", strerror(rc));
		return -rc;
	}
	rc = srdma_conn_wait_cq(c, c->send_cq, deadline, "peer binding",
				"our binding SEND did not complete in time", &wc, err);
	if (rc < 0)
		return rc;
	if (wc.status != IBV_WC_SUCCESS) {
		srdma_set_err(err, -EIO, "peer binding", "send: %s", ibv_wc_status_str(wc.status));
		return -EIO;
	}
	rc = 0;
	if (c->shape.sh) {
		rc = srdma_conn_post_recv(c, c->bind_slot);
		if (rc)
			srdma_set_err(err, rc, "peer binding", "repost receive: %s", strerror(-rc));
	}
	return rc;
}

/* The peer's first RDMA message must be its binding message. */
static int receive_binding(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	struct ibv_wc wc;
	int rc = srdma_conn_wait_cq(c, c->recv_cq, deadline, "peer binding",
				    "no binding message from the peer in time", &wc, err);

	if (rc < 0)
		return rc;
	if (wc.status != IBV_WC_SUCCESS || wc.opcode != IBV_WC_RECV ||
	    wc.wr_id >= (c->shape.sh ? c->shape.sh->slots : SRDMA_SLOTS)) {
		srdma_set_err(err, -EPROTO, "peer binding", "first RDMA message: %s",
			      wc.status != IBV_WC_SUCCESS ? ibv_wc_status_str(wc.status) :
			      "not a SEND");
		return -EPROTO;
	}
	rc = srdma_binding_check(c->ssl, c->server, &c->local, &c->remote,
				 (const uint8_t *)c->recv_buf.addr + wc.wr_id * c->shape.buf_size,
				 wc.byte_len, err);
	if (c->shape.sh) {
		/* Held (and given back at close on failure): the server's
		 * own binding message goes out of it. */
		c->bind_slot = (unsigned int)wc.wr_id;
		return rc;
	}
	if (rc)
		return rc;
	rc = srdma_conn_post_recv(c, (unsigned int)wc.wr_id);
	if (rc)
		srdma_set_err(err, rc, "peer binding", "repost receive: %s", strerror(-rc));
	return rc;
}

int srdma_binding_exchange(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	int rc;

	if (c->server) {
		rc = receive_binding(c, deadline, err);
		if (!rc)
			rc = send_binding(c, deadline, err);
	} else {
		rc = send_binding(c, deadline, err);
		if (!rc)
			rc = receive_binding(c, deadline, err);
	}
	return rc;
}

/* The binding exchange, timed; a failure is told over TLS. */
static int bind_peer(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	int64_t t0 = srdma_now_us();
	int rc = srdma_binding_exchange(c, deadline, err);

	c->info.times.binding_us = srdma_us_since(t0);
	if (rc)
		srdma_ctrl_send_error(c, SRDMA_ERROR_BINDING, NULL, srdma_now_ms() + 500);
	return rc;
}

/*
 * The client does not wait for the server's HELLO before it builds its QP
 * and sends PARAMS: the server's answer (HELLO, or ERROR on a mismatch)
 * comes back in the same round trip as its PARAMS.
 */
static int setup_client(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	struct srdma_msg m;
	int rc;

	rc = send_hello(c, deadline, err);
	if (!rc)
		rc = make_qp(c, deadline, err);
	if (!rc)
		rc = send_params(c, deadline, err);
	if (rc == -ECONNRESET) {
		/* The server may have refused (ERROR, then close) before it
		 * read what we sent: its reason beats "connection closed". */
		struct srdma_err why;

		if (expect(c, SRDMA_MSG_HELLO, &m, srdma_now_ms() + 200, &why) == -ECONNREFUSED) {
			if (err)
				*err = why;
			return -ECONNREFUSED;
		}
		return rc;
	}
	if (!rc)
		rc = expect(c, SRDMA_MSG_HELLO, &m, deadline, err);
	if (!rc)
		rc = check_hello(c, &m.u.hello, deadline, err);
	if (!rc)
		rc = connect_to_peer(c, deadline, err);
	if (!rc)
		rc = bind_peer(c, deadline, err);
	return rc;
}

/* The server's QP is in RTS before its PARAMS leave, and the client's
 * binding message shows the client's is: no READY round trip is needed. */
static int setup_server(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	struct srdma_msg m;
	int rc;

	rc = expect(c, SRDMA_MSG_HELLO, &m, deadline, err);
	if (!rc)
		rc = check_hello(c, &m.u.hello, deadline, err);
	if (!rc)
		rc = send_hello(c, deadline, err);
	if (!rc)
		rc = make_qp(c, deadline, err);
	if (!rc)
		rc = connect_to_peer(c, deadline, err);
	if (!rc && c->shape.sh) {
		/* Shared mode: the window's rkey is the memory window's,
		 * bound to this QP now that it is in RTS. */
		int64_t t0 = srdma_now_us();

		rc = srdma_verbs_bind_window(c, deadline, err);
		c->info.times.qp_connect_us += srdma_us_since(t0);
		if (rc)
			rc = rdma_failed(c, rc, deadline);
	}
	if (!rc)
		rc = send_params(c, deadline, err);
	if (!rc)
		rc = bind_peer(c, deadline, err);
	return rc;
}

/* Epoch 0's keys, from the TLS session both sides share. */
static int start_sealing(struct srdma_conn *c, struct srdma_err *err)
{
	uint8_t c2s[SRDMA_SEAL_KEY_LEN], s2c[SRDMA_SEAL_KEY_LEN];
	int rc = srdma_seal_keys(c->ssl, 0, c2s, s2c);

	if (!rc)
		rc = srdma_seal_new(&c->seal, c->shape.seal, c->server, 0,
				    c->server ? s2c : c2s, c->server ? c2s : s2c);
	OPENSSL_cleanse(c2s, sizeof(c2s));
	OPENSSL_cleanse(s2c, sizeof(s2c));
	if (rc)
		srdma_set_err(err, rc, "seal keys", "%s",
			      rc == -ENOMEM ? "out of memory, or the cipher is not available"
					    : "TLS exporter failed");
	return rc;
}

int srdma_conn_setup(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	struct srdma_conn_info *i = &c->info;
	struct srdma_setup_times *t = &i->times;
	int64_t t0 = srdma_now_us();
	uint32_t spent, rdma, made_before = t->qp_create_us;	/* client: during TLS */
	int rc;

	/* From here on one read of the control channel does bounded work:
	 * OpenSSL returns after each non-application record (a KeyUpdate or
	 * ticket flood) instead of looping over them inside one SSL_read, so
	 * the setup's deadline holds and, later, one poll stays bounded. */
	SSL_clear_mode(c->ssl, SSL_MODE_AUTO_RETRY);
	rc = c->server ? setup_server(c, deadline, err) : setup_client(c, deadline, err);
	spent = srdma_us_since(t0);

	if (rc)
		return rc;
	rdma = t->qp_create_us - made_before + t->qp_connect_us + t->binding_us;
	t->params_us = spent > rdma ? spent - rdma : 0;
	t->total_us = srdma_us_since(c->t_start);
	/* The setup waited on the channel itself and may have left the CQs
	 * disarmed; arm them for the caller. (A completion that came in
	 * before this raises no event: callers poll once before waiting, as
	 * srdma_conn_next_wc() does.) */
	if (ibv_req_notify_cq(c->send_cq, 0) || ibv_req_notify_cq(c->recv_cq, 0)) {
		srdma_set_err(err, -EIO, "arm CQ", "ibv_req_notify_cq failed");
		return -EIO;
	}
	if (c->shape.seal) {
		rc = start_sealing(c, err);
		if (rc)
			return rc;
	}
	i->seal = c->shape.seal;
	i->psn_mode = c->shape.psn_mode;
	i->local_qpn = c->local.qpn;
	i->local_psn = c->local.psn;
	i->remote_qpn = c->remote.qpn;
	i->remote_psn = c->remote.psn;
	i->remote_addr = c->remote.addr;
	i->remote_rkey = c->remote.rkey;
	i->remote_len = c->remote.len;
	i->gid_index = c->dev->gid_index;
	snprintf(i->dev_name, sizeof(i->dev_name), "%s", c->dev->name);
	c->established = true;
	c->last_heard_ms = srdma_now_ms();
	c->rk.interval_ms = c->shape.rekey_ms;
	c->rk.due_ms = c->last_heard_ms + c->rk.interval_ms;
	return 0;
}

void srdma_conn_fill_tls_info(struct srdma_conn *c)
{
	struct srdma_conn_info *i = &c->info;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	X509 *peer;

	snprintf(i->tls_version, sizeof(i->tls_version), "%s", SSL_get_version(c->ssl));
	i->tls_resumed = SSL_session_reused(c->ssl) == 1;
	snprintf(i->tls_cipher, sizeof(i->tls_cipher), "%s", SSL_get_cipher_name(c->ssl));
	peer = SSL_get0_peer_certificate(c->ssl);
	if (peer)
		X509_NAME_oneline(X509_get_subject_name(peer), i->peer_cert_subject,
				  sizeof(i->peer_cert_subject));
	if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0)
		srdma_format_addr((struct sockaddr *)&ss, i->peer_addr, sizeof(i->peer_addr));
}

/* --- after setup --- */

/*
 * One call does bounded work, so that no peer keeps the caller's loop: at
 * most CTRL_READS_PER_POLL reads from the socket (each takes one TLS record
 * at most), and a peer that has more than CTRL_MSGS_PER_POLL control
 * messages waiting at once floods, which no conforming peer does.
 */
#define CTRL_READS_PER_POLL	8
#define CTRL_MSGS_PER_POLL	8

/* A control message that is sent now or not at all: a peer that does not
 * read is not waited for. */
static int ctrl_send_now(struct srdma_conn *c, uint16_t type, struct srdma_err *err)
{
	struct srdma_msg m = { .type = type };
	int rc = srdma_ctrl_send(c, &m, srdma_now_ms(), err);

	if (rc == -ETIMEDOUT) {
		srdma_set_err(err, -EPIPE, "send control message",
			      "the peer does not read its control channel");
		return -EPIPE;
	}
	return rc;
}

enum { CTRL_NOTHING, CTRL_MESSAGE, CTRL_LOST };

/* Read toward the next whole message: CTRL_MESSAGE with *m filled,
 * CTRL_NOTHING when nothing more is to be read now, CTRL_LOST (err filled)
 * when the connection is gone, or a negative errno. */
static int ctrl_take(struct srdma_conn *c, struct srdma_msg *m, int *reads,
		     struct srdma_err *err)
{
	for (;;) {
		struct srdma_sigpipe_guard g;
		size_t need = SRDMA_WIRE_HDR_LEN, got = 0;
		uint16_t type = 0;
		uint32_t len = 0;
		int r, rc;

		if (c->ctrl_have >= SRDMA_WIRE_HDR_LEN) {
			rc = srdma_wire_decode_header(c->ctrl_buf, &type, &len);
			if (rc) {
				srdma_set_err(err, rc, "read control message",
					      "invalid header: %s", srdma_wire_error_text(rc));
				return rc;
			}
			need += len;
		}
		if (c->ctrl_have == need) {
			rc = srdma_wire_decode_body(type, c->ctrl_buf + SRDMA_WIRE_HDR_LEN,
						    len, m);
			c->ctrl_have = 0;
			if (rc) {
				srdma_set_err(err, rc, "read control message", "%s: %s",
					      srdma_msg_type_name(type), srdma_wire_error_text(rc));
				return rc;
			}
			c->last_heard_ms = srdma_now_ms();
			return CTRL_MESSAGE;
		}
		/* Bytes already inside OpenSSL raise no poll event: take them
		 * now (they are one record's worth at most). */
		if (*reads >= CTRL_READS_PER_POLL && !SSL_has_pending(c->ssl))
			return CTRL_NOTHING;
		(*reads)++;
		srdma_sigpipe_block(&g);
		r = SSL_read_ex(c->ssl, c->ctrl_buf + c->ctrl_have, need - c->ctrl_have, &got);
		srdma_sigpipe_unblock(&g);
		if (r == 1) {
			c->ctrl_have += got;
			continue;
		}
		r = SSL_get_error(c->ssl, r);
		if (r == SSL_ERROR_WANT_READ)
			return CTRL_NOTHING;
		ERR_clear_error();
		if (r == SSL_ERROR_WANT_WRITE) {
			/* TLS must answer (a KeyUpdate) and our send buffer is
			 * full: the peer makes us write and reads nothing. */
			srdma_set_err(err, -EPIPE, "read control message",
				      "the peer does not read its control channel");
			return -EPIPE;
		}
		srdma_set_err(err, -ECONNRESET, "peer closed", "connection lost");
		return CTRL_LOST;
	}
}

/* 0: carry on (PING, PONG); 1: the peer ended it; negative: protocol error. */
static int ctrl_handle(struct srdma_conn *c, const struct srdma_msg *m,
		       struct srdma_err *err)
{
	switch (m->type) {
	case SRDMA_MSG_BYE:
		srdma_set_err(err, 0, "peer closed", "bye");
		return 1;
	case SRDMA_MSG_ERROR:
		srdma_set_err(err, -ECONNABORTED, "peer closed", "%s",
			      m->u.error.text[0] ? m->u.error.text :
			      srdma_err_code_name(m->u.error.code));
		err->peer_code = m->u.error.code;
		return 1;
	case SRDMA_MSG_PING:
		return ctrl_send_now(c, SRDMA_MSG_PONG, err);
	case SRDMA_MSG_PONG:
		c->ping_sent_ms = 0;
		return 0;
	case SRDMA_MSG_REKEY:
		return srdma_rekey_on_msg(c, &m->u.rekey, err);
	default:
		srdma_set_err(err, -EPROTO, "read control message",
			      "unexpected %s after setup", srdma_msg_type_name(m->type));
		return -EPROTO;
	}
}

/* How long a peer may stay quiet before we probe it: a third of its time. */
static int64_t probe_after_ms(const struct srdma_conn *c)
{
	return c->peer_timeout_ms / 3;
}

static bool liveness_on(const struct srdma_conn *c)
{
	return c->established && c->peer_timeout_ms > 0 && c->peer_pings;
}

/*
 * A peer quiet for a third of its time gets a PING; one that leaves the
 * PING unanswered for the other two thirds is not responding (a hung
 * process, or a host gone without a word: both fall silent).
 */
static int check_liveness(struct srdma_conn *c, struct srdma_err *err)
{
	int64_t now = srdma_now_ms();

	if (!liveness_on(c))
		return 0;
	if (c->ping_sent_ms) {
		if (now - c->ping_sent_ms < c->peer_timeout_ms - probe_after_ms(c))
			return 0;
		srdma_set_err(err, -ETIMEDOUT, "liveness check",
			      "the peer is not responding (nothing from it for %lld ms, "
			      "a probe unanswered)", (long long)(now - c->last_heard_ms));
		return 1;
	}
	if (now - c->last_heard_ms < probe_after_ms(c))
		return 0;
	c->ping_sent_ms = now;
	return ctrl_send_now(c, SRDMA_MSG_PING, err);
}

/* The public verdict (enum srdma_close) on an ended control channel: rc 1
 * (the peer ended it, or it was lost) or a negative errno, with e. */
static int how_it_ended(int rc, const struct srdma_err *e)
{
	if (e->code == -ECONNRESET)
		return SRDMA_CLOSE_LOST;
	if (rc < 0)
		return SRDMA_CLOSE_PROTOCOL;
	switch (e->code) {
	case 0:
		return SRDMA_CLOSE_BYE;
	case -ECONNABORTED:
		return SRDMA_CLOSE_ERROR;
	case -ETIMEDOUT:
		return SRDMA_CLOSE_TIMEOUT;
	default:
		return SRDMA_CLOSE_LOST;
	}
}

int srdma_conn_poll_ctrl(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_err e = { 0 };
	int reads = 0, msgs = 0, rc;

	if (!c->end_rc && srdma_seal_broken(c->seal)) {
		c->end_rc = SRDMA_CLOSE_PROTOCOL;
		srdma_set_err(&c->end_err, -EBADMSG, "open sealed message", "%s",
			      srdma_seal_broken(c->seal));
	}
	if (c->end_rc) {
		if (err)
			*err = c->end_err;
		return c->end_rc;
	}
	for (;;) {
		struct srdma_msg m;

		rc = ctrl_take(c, &m, &reads, &e);
		if (rc == CTRL_LOST) {
			rc = 1;		/* ended: e says "connection lost" */
			break;
		}
		if (rc != CTRL_MESSAGE)
			break;
		if (++msgs > CTRL_MSGS_PER_POLL) {
			srdma_set_err(&e, -EPROTO, "read control message",
				      "the peer floods its control channel");
			rc = -EPROTO;
			break;
		}
		rc = ctrl_handle(c, &m, &e);
		if (rc)
			break;
	}
	if (rc == 0)
		rc = check_liveness(c, &e);
	if (rc == 0)
		rc = srdma_rekey_tick(c, &e);
	if (rc) {
		c->end_rc = how_it_ended(rc, &e);
		c->end_err = e;
		if (err)
			*err = e;
		rc = c->end_rc;
	}
	return rc;
}

int srdma_conn_ctrl_timeout_ms(const struct srdma_conn *c)
{
	int64_t due, left;
	int rk = srdma_rekey_timeout_ms(c), live;

	if (c->end_rc)
		return -1;
	if (!liveness_on(c))
		return rk;
	due = c->ping_sent_ms ? c->ping_sent_ms + c->peer_timeout_ms - probe_after_ms(c)
			      : c->last_heard_ms + probe_after_ms(c);
	left = due - srdma_now_ms();
	live = left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
	return rk >= 0 && rk < live ? rk : live;
}

void srdma_conn_free(struct srdma_conn *c)
{
	if (!c)
		return;
	srdma_rekey_free(c);
	srdma_verbs_destroy(c);
	srdma_seal_free(c->seal);
	if (c->ssl) {
		srdma_tls_set_ticket_sink(c->ssl, NULL, NULL);
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	if (c->client)
		srdma_client_unref(c->client);
	if (c->listener) {
		if (c->counted)
			__atomic_sub_fetch(&c->listener->clients, 1, __ATOMIC_RELEASE);
		srdma_listener_unref(c->listener);
	}
	free(c);
}

/* TLS close_notify, once the handshake is done (a peer may have gone). */
static void close_notify(struct srdma_conn *c)
{
	struct srdma_sigpipe_guard g;

	srdma_sigpipe_block(&g);
	SSL_shutdown(c->ssl);
	srdma_sigpipe_unblock(&g);
	ERR_clear_error();
}

void srdma_conn_linger_free(struct srdma_conn *c, int ms)
{
	int64_t deadline = srdma_now_ms() + ms;
	char sink[512];

	if (c->ssl && SSL_is_init_finished(c->ssl))
		close_notify(c);
	if (c->fd >= 0 && shutdown(c->fd, SHUT_WR) == 0) {
		for (;;) {
			struct pollfd p = { .fd = c->fd, .events = POLLIN };
			ssize_t n;

			if (poll(&p, 1, srdma_ms_left(deadline)) <= 0)
				break;
			n = read(c->fd, sink, sizeof(sink));
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				break;
		}
	}
	srdma_conn_free(c);
}

void srdma_conn_close(struct srdma_conn *c, uint16_t code, const char *text)
{
	int64_t deadline;

	if (!c)
		return;
	/* Now or not at all: a peer that does not read (a hung process, a
	 * flood) must not hold the caller here. The socket's own buffer
	 * takes these few bytes from any peer that still reads. */
	deadline = srdma_now_ms();
	/* Code 0 after the channel ended: the reason that fits how. */
	if (!code && srdma_seal_broken(c->seal)) {
		code = SRDMA_ERROR_SEAL;
		text = srdma_seal_broken(c->seal);
	} else if (!code && c->end_rc == SRDMA_CLOSE_TIMEOUT)
		code = SRDMA_ERROR_NOT_RESPONDING;
	else if (!code && c->end_rc == SRDMA_CLOSE_PROTOCOL)
		code = SRDMA_ERROR_BAD_MESSAGE;
	if (c->ssl && SSL_is_init_finished(c->ssl)) {
		if (code)
			srdma_ctrl_send_error(c, code, text, deadline);
		else
			send_empty(c, SRDMA_MSG_BYE, deadline, NULL);
		close_notify(c);
	}
	srdma_conn_free(c);
}

const struct srdma_conn_info *srdma_conn_info(const struct srdma_conn *c)
{
	return &c->info;
}

struct ibv_qp *srdma_conn_qp(const struct srdma_conn *c)
{
	return c->qp;
}

void srdma_conn_set_context(struct srdma_conn *c, void *ctx)
{
	c->user = ctx;
}

void *srdma_conn_context(const struct srdma_conn *c)
{
	return c->user;
}

struct ibv_comp_channel *srdma_conn_channel(const struct srdma_conn *c)
{
	return c->channel;
}

const struct srdma_buf *srdma_conn_send_buf(const struct srdma_conn *c)
{
	return &c->send_buf;
}

const struct srdma_buf *srdma_conn_recv_buf(const struct srdma_conn *c)
{
	return &c->recv_buf;
}

const struct srdma_buf *srdma_conn_window(const struct srdma_conn *c)
{
	return &c->window;
}

uint32_t srdma_conn_max_inline(const struct srdma_conn *c)
{
	return c->shape.max_inline;
}

size_t srdma_conn_buf_size(const struct srdma_conn *c)
{
	return c->shape.buf_size;
}

int srdma_conn_ctrl_fd(const struct srdma_conn *c)
{
	return c->fd;
}

int srdma_conn_seal(struct srdma_conn *c, uint16_t kind, const void *msg, size_t len,
		    void *out, size_t cap, size_t *out_len)
{
	if (!c->seal)
		return -EOPNOTSUPP;
	return srdma_seal_msg(c->seal, kind, msg, len, out, cap, out_len);
}

int srdma_conn_open(struct srdma_conn *c, void *buf, size_t len, uint16_t *kind,
		    void **msg, size_t *msg_len)
{
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };
	int rc;

	if (!c->seal)
		return -EOPNOTSUPP;
	/* Nothing sealed is longer than a slot or the window (buf_size
	 * each): a length the peer named (a WRITE's) is not read past them. */
	rc = srdma_seal_open(c->seal, buf, len, c->shape.buf_size, kind, msg, msg_len);
	/* Whoever sent it, nothing more from this connection is trusted:
	 * fail its QPs (during a rekey, both), so that what follows is
	 * flushed, not delivered. */
	if (rc == -EBADMSG) {
		ibv_modify_qp(c->qp, &a, IBV_QP_STATE);
		if (c->rk.qp_old && c->rk.qp_old != c->qp)
			ibv_modify_qp(c->rk.qp_old, &a, IBV_QP_STATE);
		if (c->rk.qp_new && c->rk.qp_new != c->qp)
			ibv_modify_qp(c->rk.qp_new, &a, IBV_QP_STATE);
	}
	return rc;
}
