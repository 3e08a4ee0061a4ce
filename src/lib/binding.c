/*
 * Peer binding: proof that the RDMA peer is the TLS peer.
 *
 * Once both QPs are in RTS, each side's first RDMA message is a SEND of
 * "SRB1" followed by HMAC-SHA256(key, role || own QPN || peer QPN || own PSN
 * || peer PSN), the numbers as the sender sees them, big-endian u32, role
 * 'C' or 'S'. The key is 32 bytes of the TLS exporter ("EXPORTER-srdma-
 * binding"): only the two TLS endpoints can compute it. A QP whose first
 * message does not verify is torn down. The client sends first; the server
 * answers only after verifying.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "srdma_internal.h"

#define BINDING_MAGIC "SRB1"
#define BINDING_LEN (4 + 32)
#define BINDING_LABEL "EXPORTER-srdma-binding"

int srdma_binding_fault;	/* tests only: see srdma_internal.h */

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* The MAC the side with role `role` sends (from that side's point of view). */
static int binding_mac(struct srdma_conn *c, char role, uint8_t mac[32],
		       struct srdma_err *err)
{
	const struct srdma_params *self = role == (c->server ? 'S' : 'C') ? &c->local : &c->remote;
	const struct srdma_params *peer = self == &c->local ? &c->remote : &c->local;
	uint8_t key[32], msg[17];
	unsigned int len = 0;

	if (SSL_export_keying_material(c->ssl, key, sizeof(key), BINDING_LABEL,
				       strlen(BINDING_LABEL), NULL, 0, 0) != 1) {
		srdma_set_err(err, -EPROTO, "peer binding", "TLS exporter failed");
		return -EPROTO;
	}
	msg[0] = (uint8_t)role;
	put_u32(msg + 1, self->qpn);
	put_u32(msg + 5, peer->qpn);
	put_u32(msg + 9, self->psn);
	put_u32(msg + 13, peer->psn);
	if (!HMAC(EVP_sha256(), key, sizeof(key), msg, sizeof(msg), mac, &len) || len != 32) {
		OPENSSL_cleanse(key, sizeof(key));
		srdma_set_err(err, -EPROTO, "peer binding", "HMAC failed");
		return -EPROTO;
	}
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

/* The control channel ended the binding: say how, as it happened. */
static int peer_ended(int rc, const struct srdma_err *peer, struct srdma_err *err)
{
	if (rc < 0) {
		srdma_set_err(err, rc, "peer binding", "%s: %s", peer->step, peer->msg);
		return rc;
	}
	switch (peer->code) {
	case 0:
		srdma_set_err(err, -ECONNRESET, "peer binding",
			      "the peer closed the connection (BYE) before setup finished");
		return -ECONNRESET;
	case -ECONNABORTED:
		srdma_set_err(err, -ECONNREFUSED, "peer binding", "the peer refused: %s",
			      peer->msg);
		if (err)
			err->peer_code = peer->peer_code;
		return -ECONNREFUSED;
	default:
		srdma_set_err(err, peer->code, "peer binding", "%s", peer->msg);
		return peer->code;
	}
}

/*
 * Wait for the completion channel, while also watching the TLS channel: a
 * peer that refuses our binding says so there (ERROR) rather than on the
 * QP, and a peer that leaves closes it; either is known at once, not at the
 * deadline. 0: the channel had an event (taken); negative: err filled.
 */
static int wait_rdma_or_peer(struct srdma_conn *c, int64_t deadline, const char *late,
			     struct srdma_err *err)
{
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = c->channel->fd, .events = POLLIN },
			{ .fd = c->fd, .events = POLLIN },
		};
		struct ibv_cq *cq;
		void *ctx;
		int n = poll(p, 2, srdma_ms_left(deadline));

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0) {
			srdma_set_err(err, -ETIMEDOUT, "peer binding", "%s", late);
			return -ETIMEDOUT;
		}
		if (n < 0) {
			srdma_set_err(err, -errno, "peer binding", "poll: %s", strerror(errno));
			return -errno;
		}
		if (p[1].revents) {
			struct srdma_err peer;
			int rc = srdma_conn_poll_ctrl(c, &peer);

			if (rc)
				return peer_ended(rc, &peer, err);
		}
		if (p[0].revents) {
			/* Either CQ's event; a CQ left disarmed is armed again
			 * when setup ends. */
			if (ibv_get_cq_event(c->channel, &cq, &ctx) == 0)
				ibv_ack_cq_events(cq, 1);
			return 0;
		}
	}
}

/*
 * Our binding SEND's completion, from the send CQ only: a receive that
 * arrives meanwhile stays in the receive CQ for whoever reads it next (the
 * peer's binding, or on the server the client's first real message, which
 * belongs to the program).
 */
static int wait_send_done(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	for (;;) {
		struct ibv_wc wc;
		int n = ibv_poll_cq(c->send_cq, 1, &wc), rc;

		if (n == 0) {
			/* Arm, then look again: a completion that came before
			 * the arming raises no event. */
			if (ibv_req_notify_cq(c->send_cq, 0)) {
				srdma_set_err(err, -EIO, "peer binding", "arm send CQ");
				return -EIO;
			}
			n = ibv_poll_cq(c->send_cq, 1, &wc);
		}
		if (n < 0) {
			srdma_set_err(err, -EIO, "peer binding", "poll send CQ");
			return -EIO;
		}
		if (n == 1) {
			if (wc.status == IBV_WC_SUCCESS)
				return 0;
			srdma_set_err(err, -EIO, "peer binding", "send: %s",
				      ibv_wc_status_str(wc.status));
			return -EIO;
		}
		rc = wait_rdma_or_peer(c, deadline, "our binding SEND did not complete in time", err);
		if (rc)
			return rc;
	}
}

static int send_binding(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	uint8_t *p = c->send_buf.addr;
	struct ibv_sge sge = { .addr = (uintptr_t)p, .length = BINDING_LEN, .lkey = c->send_buf.lkey };
	struct ibv_send_wr wr = { .wr_id = 0, .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bad;
	int rc;

	memcpy(p, BINDING_MAGIC, 4);
	rc = binding_mac(c, c->server ? 'S' : 'C', p + 4, err);
	if (rc)
		return rc;
	if (srdma_binding_fault == 1) {
		p[4] ^= 0x01;			/* a wrong MAC */
	} else if (srdma_binding_fault == 2) {
		memcpy(p, "no binding here, just data.........", BINDING_LEN);
	} else if (srdma_binding_fault == 3) {	/* gone without a word */
		shutdown(c->fd, SHUT_RDWR);
		srdma_set_err(err, -ECONNRESET, "peer binding", "vanished (test)");
		return -ECONNRESET;
	}
	rc = ibv_post_send(c->qp, &wr, &bad);
	if (rc) {
		srdma_set_err(err, -rc, "peer binding", "post send: %s", strerror(rc));
		return -rc;
	}
	return wait_send_done(c, deadline, err);
}

/* The next completion, from either CQ. 1: *wc filled; negative: err filled. */
static int next_wc_or_refusal(struct srdma_conn *c, int64_t deadline, struct ibv_wc *wc,
			      struct srdma_err *err)
{
	for (;;) {
		int n = srdma_conn_next_wc(c, 0, wc);

		if (n < 0) {
			srdma_set_err(err, n, "peer binding", "completion error");
			return n;
		}
		if (n)
			return 1;
		n = wait_rdma_or_peer(c, deadline, "no binding message from the peer in time", err);
		if (n)
			return n;
	}
}

static int receive_binding(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	uint8_t want[32];
	const uint8_t *got;
	struct ibv_wc wc;
	int rc;

	do {
		rc = next_wc_or_refusal(c, deadline, &wc, err);
		if (rc < 0)
			return rc;
	} while (wc.status == IBV_WC_SUCCESS && !(wc.opcode & IBV_WC_RECV));
	if (wc.status != IBV_WC_SUCCESS || wc.opcode != IBV_WC_RECV || wc.wr_id >= SRDMA_SLOTS) {
		srdma_set_err(err, -EPROTO, "peer binding", "first RDMA message: %s",
			      wc.status != IBV_WC_SUCCESS ? ibv_wc_status_str(wc.status) :
			      "not a SEND");
		return -EPROTO;
	}
	got = (const uint8_t *)c->recv_buf.addr + wc.wr_id * c->shape.buf_size;
	rc = binding_mac(c, c->server ? 'C' : 'S', want, err);
	if (rc)
		return rc;
	if (wc.byte_len != BINDING_LEN || memcmp(got, BINDING_MAGIC, 4) != 0 ||
	    CRYPTO_memcmp(got + 4, want, 32) != 0) {
		srdma_set_err(err, -EACCES, "peer binding",
			      "the first RDMA message does not carry the binding MAC: "
			      "the RDMA peer is not the TLS peer");
		return -EACCES;
	}
	rc = srdma_conn_post_recv(c, (unsigned int)wc.wr_id);
	if (rc) {
		srdma_set_err(err, rc, "peer binding", "repost receive: %s", strerror(-rc));
		return rc;
	}
	return 0;
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
