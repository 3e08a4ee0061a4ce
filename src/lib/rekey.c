/*
 * Rekeying, make before break: a live connection moves to a fresh QP with
 * fresh PSNs (and, sealed, fresh keys in a new epoch) without losing,
 * duplicating or reordering a message. docs/PROTOCOL.md ("Rekeying") is
 * the reference; in short, over the TLS control channel:
 *
 *	A (offers)                          B (answers)
 *	new QP (INIT), PSN_A'
 *	REKEY OFFER(QPN_A', PSN_A')   ->
 *	                                    new QP to RTR/RTS against A's
 *	                              <-    REKEY ANSWER(QPN_B', PSN_B')
 *	new QP to RTR/RTS against B's
 *	marker on the old QP, then sends
 *	go on the new QP
 *	REKEY SWITCH                  ->
 *	                                    marker on the old QP, then sends
 *	                                    go on the new QP
 *	(each side, once its marker's send has completed: the peer has it,
 *	and nothing of ours will ever be retried on the old QP)
 *	REKEY DONE                    <->   REKEY DONE
 *
 * A marker is an empty SEND WITH IMMEDIATE, the immediate a 32-bit token
 * from the TLS exporter for this epoch: the last message of a direction on
 * the old QP. Receives go up on the new QP only once the peer's marker has
 * arrived (until then they are all on the old QP), so nothing the peer
 * sends on the new QP can be taken before what it sent on the old one:
 * it waits, receiver-not-ready, and the QP retries it without limit
 * (rnr_retry 7): that costs a moment, never a message. At the marker the
 * slot it used and every slot the program gives back go up on the new QP.
 * Once both directions have moved, our marker has completed and the
 * peer's DONE has come, the old QP is failed, the receives still posted on
 * it come back flushed and go up on the new one, unseen by the program,
 * and it is destroyed. Without the DONE, a lost acknowledgement of the
 * peer's marker would have the peer retry it into a QP we had failed, and
 * the connection would end.
 *
 * While the offer is out the offerer's QP is in INIT: the answerer sends
 * nothing on it until the SWITCH, which comes after that QP is in RTS.
 *
 * Steps that must talk TLS (DONE, answering a queued OFFER) wait for the
 * next srdma_conn_poll_ctrl(): srdma_rekey_timeout_ms() says 0 then.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "srdma_internal.h"

enum rk_state {
	RK_IDLE = 0,
	RK_OFFERED,	/* our OFFER is out; our new QP in INIT */
	RK_ANSWERED,	/* we answered; our new QP in RTS; waiting for SWITCH */
	RK_SWITCHED,	/* our sends are on the new QP; retiring the old one */
};

#define REKEY_LABEL "EXPORTER-srdma-rekey"

static int rk_fail(struct srdma_err *err, int rc, const char *step, const char *why)
{
	srdma_set_err(err, rc, step, "%s", why);
	return rc;
}

/* This epoch's markers and seal keys, from the TLS session. */
static int derive(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;
	uint8_t tok[8], ctx[4] = { (uint8_t)(r->epoch >> 24), (uint8_t)(r->epoch >> 16),
				   (uint8_t)(r->epoch >> 8), (uint8_t)r->epoch };
	uint32_t client, server;

	if (SSL_export_keying_material(c->ssl, tok, sizeof(tok), REKEY_LABEL,
				       strlen(REKEY_LABEL), ctx, sizeof(ctx), 1) != 1)
		return rk_fail(err, -EPROTO, "rekey", "TLS exporter failed");
	client = (uint32_t)tok[0] << 24 | (uint32_t)tok[1] << 16 | (uint32_t)tok[2] << 8 | tok[3];
	server = (uint32_t)tok[4] << 24 | (uint32_t)tok[5] << 16 | (uint32_t)tok[6] << 8 | tok[7];
	r->tx_token = c->server ? server : client;
	r->rx_token = c->server ? client : server;
	if (c->seal) {
		uint8_t c2s[SRDMA_SEAL_KEY_LEN], s2c[SRDMA_SEAL_KEY_LEN];

		if (srdma_seal_keys(c->ssl, r->epoch, c2s, s2c))
			return rk_fail(err, -EPROTO, "rekey", "TLS exporter failed (seal keys)");
		memcpy(r->key_tx, c->server ? s2c : c2s, sizeof(r->key_tx));
		memcpy(r->key_rx, c->server ? c2s : s2c, sizeof(r->key_rx));
		OPENSSL_cleanse(c2s, sizeof(c2s));
		OPENSSL_cleanse(s2c, sizeof(s2c));
	}
	return 0;
}

/* Our new QP and its PSN (the rest of the parameters stay the same). */
static int make_new_qp(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;
	uint32_t peer_psn = 0;
	int rc;

	rc = srdma_verbs_another_qp(c, &r->qp_new, err);
	if (rc)
		return rc;
	r->local = c->local;
	r->local.qpn = r->qp_new->qp_num;
	if (c->shape.psn_mode == SRDMA_PSN_EXPORTER)
		rc = srdma_psn_from_exporter_epoch(c, r->epoch, &r->local.psn, &peer_psn, err);
	else if ((rc = srdma_psn_generate(&r->local.psn)))
		srdma_set_err(err, rc, "rekey", "getrandom failed: no PSN, no rekey");
	r->remote = c->remote;
	r->remote.psn = peer_psn;	/* exporter: known now; else from the peer */
	return rc;
}

/* Forget a rekey that did not get as far as switching (ours, given up
 * for the peer's offer). */
static void drop_new(struct srdma_conn *c)
{
	struct srdma_rekey *r = &c->rk;

	if (r->qp_new)
		ibv_destroy_qp(r->qp_new);
	r->qp_new = NULL;
	r->qp_old = NULL;
	r->rx_qp = NULL;
	r->epoch--;
	r->state = RK_IDLE;
	OPENSSL_cleanse(r->key_tx, sizeof(r->key_tx));
	OPENSSL_cleanse(r->key_rx, sizeof(r->key_rx));
}

/* The next epoch: its markers and keys, and our new QP (INIT) with its PSN. */
static int begin(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;
	int rc;

	r->epoch++;
	if (r->epoch > SRDMA_SEAL_MAX_EPOCH)
		return rk_fail(err, -EOVERFLOW, "rekey", "out of key epochs");
	r->tx_switched = r->rx_switched = false;
	r->marker_posted = r->marker_done = r->old_failed = false;
	r->done_sent = r->peer_done = false;
	r->on_old = 0;
	r->qp_old = c->qp;
	r->rx_qp = c->qp;	/* until the peer's marker, whatever c->qp becomes */
	r->deadline_ms = srdma_now_ms() + SRDMA_REKEY_TIMEOUT_MS;
	rc = derive(c, err);
	return rc ? rc : make_new_qp(c, err);
}

static int send_rekey(struct srdma_conn *c, uint8_t phase, struct srdma_err *err)
{
	struct srdma_msg m = { .type = SRDMA_MSG_REKEY };

	m.u.rekey.phase = phase;
	if (phase == SRDMA_REKEY_OFFER || phase == SRDMA_REKEY_ANSWER) {
		m.u.rekey.qpn = c->rk.local.qpn;
		m.u.rekey.psn = c->shape.psn_mode == SRDMA_PSN_EXPORTER ? 0 : c->rk.local.psn;
	}
	return srdma_ctrl_send(c, &m, srdma_now_ms() + 1000, err);
}

int srdma_conn_rekey(struct srdma_conn *c, struct srdma_err *err)
{
	int rc;

	if (c->shape.sh)
		return rk_fail(err, -EOPNOTSUPP, "rekey", "not in shared mode");
	if (!c->established || c->end_rc)
		return rk_fail(err, -ENOTCONN, "rekey", "the connection is not up");
	if (!c->rk.peer_can)
		return rk_fail(err, -EOPNOTSUPP, "rekey", "the peer does not rekey");
	if (c->rk.state != RK_IDLE || c->rk.offer_queued)
		return rk_fail(err, -EBUSY, "rekey", "a rekey is in progress");
	rc = begin(c, err);
	if (!rc)
		rc = send_rekey(c, SRDMA_REKEY_OFFER, err);
	if (rc) {
		drop_new(c);
		return rc;
	}
	c->rk.state = RK_OFFERED;
	c->rk.offered_by_us = true;
	return 0;
}

int srdma_conn_rekeying(const struct srdma_conn *c)
{
	return c->rk.state != RK_IDLE || c->rk.offer_queued;
}

/* The peer's new QP, as its OFFER or ANSWER names it. */
static int take_peer(struct srdma_conn *c, const struct srdma_rekey_msg *m,
		     struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;

	if (c->shape.psn_mode == SRDMA_PSN_EXPORTER) {
		if (m->psn != 0)
			return rk_fail(err, -EPROTO, "rekey", "the peer sent a PSN in exporter mode");
	} else {
		r->remote.psn = m->psn;
	}
	r->remote.qpn = m->qpn;
	return srdma_verbs_connect_qp(c, r->qp_new, &r->local, &r->remote, err);
}

/* Our marker, the last message on the old QP: posted now, or, when the
 * program's sends fill the old QP's queue, as soon as one completes
 * (nothing else goes on the old QP after the switch, so it stays last). */
static int post_marker(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;
	struct ibv_send_wr wr = {
		.wr_id = SRDMA_WR_ID_REKEY,
		.num_sge = 0,
		.opcode = IBV_WR_SEND_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(r->tx_token),
	}, *bad;
	int rc;

	if (r->marker_posted || !r->tx_switched)
		return 0;
	rc = ibv_post_send(r->qp_old, &wr, &bad);
	if (rc == ENOMEM)
		return 0;
	if (rc)
		return rk_fail(err, -rc, "rekey", "cannot post the marker");
	r->marker_posted = true;
	return 0;
}

/* From now on our sends (and seals) are the new QP's; the marker closes
 * the old QP's stream. */
static int switch_tx(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;

	if (c->seal && srdma_seal_rekey_tx(c->seal, r->epoch, r->key_tx))
		return rk_fail(err, -EIO, "rekey", "cannot set the new seal key");
	OPENSSL_cleanse(r->key_tx, sizeof(r->key_tx));
	c->qp = r->qp_new;
	r->tx_switched = true;
	r->state = RK_SWITCHED;
	return post_marker(c, err);
}

static int retire(struct srdma_conn *c);

/* Take the peer's OFFER: our new QP against its, to RTS, and ANSWER. */
static int answer(struct srdma_conn *c, const struct srdma_rekey_msg *m, struct srdma_err *err)
{
	int rc = begin(c, err);

	if (!rc)
		rc = take_peer(c, m, err);
	if (!rc)
		rc = send_rekey(c, SRDMA_REKEY_ANSWER, err);
	if (rc)
		return rc;
	c->rk.offered_by_us = false;
	c->rk.state = RK_ANSWERED;
	return 0;
}

int srdma_rekey_on_msg(struct srdma_conn *c, const struct srdma_rekey_msg *m,
		       struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;
	int rc;

	if (c->shape.sh || !r->peer_can)
		return rk_fail(err, -EPROTO, "rekey", "a REKEY this connection did not offer to take");
	/* Not during setup: the seal keys (and the completion filter) exist
	 * only from the handover on. */
	if (!c->established)
		return rk_fail(err, -EPROTO, "rekey", "a REKEY before setup finished");
	switch (m->phase) {
	case SRDMA_REKEY_OFFER:
		if (r->offer_queued)
			return rk_fail(err, -EPROTO, "rekey", "a second OFFER before the first was answered");
		if (r->state == RK_SWITCHED) {
			/* The peer has retired its old QP and offers the next;
			 * we are still retiring ours: answer once we have. */
			r->queued = *m;
			r->offer_queued = true;
			return 0;
		}
		if (r->state == RK_OFFERED) {
			/* Both offered at once: the server's offer stands. */
			if (c->server)
				return 0;
			drop_new(c);
		} else if (r->state != RK_IDLE) {
			return rk_fail(err, -EPROTO, "rekey", "an OFFER while a rekey is in progress");
		}
		return answer(c, m, err);
	case SRDMA_REKEY_ANSWER:
		if (r->state != RK_OFFERED)
			return rk_fail(err, -EPROTO, "rekey", "an ANSWER to no offer");
		rc = take_peer(c, m, err);
		if (!rc)
			rc = switch_tx(c, err);
		if (!rc)
			rc = send_rekey(c, SRDMA_REKEY_SWITCH, err);
		return rc;
	case SRDMA_REKEY_SWITCH:
		if (r->state != RK_ANSWERED)
			return rk_fail(err, -EPROTO, "rekey", "a SWITCH out of turn");
		return switch_tx(c, err);
	case SRDMA_REKEY_DONE:
		/* The peer's marker is through, so the peer is past SWITCH,
		 * and so are we; one DONE per rekey. */
		if (r->state != RK_SWITCHED || r->peer_done)
			return rk_fail(err, -EPROTO, "rekey", "a DONE out of turn");
		r->peer_done = true;
		if (retire(c))
			return rk_fail(err, -EIO, "rekey", "cannot fail the old QP");
		return 0;
	default:
		return rk_fail(err, -EPROTO, "rekey", "an unknown phase");
	}
}

/* --- completions --- */

/* The peer's marker: its old stream is over. Receives move to the new QP:
 * the marker's slot now, every slot the program gives back from now on. */
static int switch_rx(struct srdma_conn *c, unsigned int slot)
{
	struct srdma_rekey *r = &c->rk;

	r->rx_switched = true;
	r->rx_qp = r->qp_new;
	r->on_old = c->rx_posted & ~(1u << slot);
	c->rx_posted = 0;
	if (c->seal && srdma_seal_rekey_rx(c->seal, r->epoch, r->key_rx))
		return -EIO;
	OPENSSL_cleanse(r->key_rx, sizeof(r->key_rx));
	return srdma_verbs_post_recv_on(c, r->qp_new, slot);
}

/* Once both directions have moved, our marker is through and we have
 * said so (our DONE), and the peer's is (its DONE): fail the old QP (its
 * receives come back flushed), then destroy it. */
static int retire(struct srdma_conn *c)
{
	struct srdma_rekey *r = &c->rk;
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };

	if (r->state != RK_SWITCHED || !r->rx_switched || !r->marker_done || !r->done_sent ||
	    !r->peer_done)
		return 0;
	if (!r->old_failed) {
		if (ibv_modify_qp(r->qp_old, &a, IBV_QP_STATE))
			return -EIO;
		r->old_failed = true;
	}
	if (r->on_old)
		return 0;
	ibv_destroy_qp(r->qp_old);
	r->qp_old = NULL;
	r->qp_new = NULL;
	r->rx_qp = NULL;
	r->state = RK_IDLE;
	r->done++;
	c->local = r->local;
	c->remote = r->remote;
	c->info.local_qpn = c->local.qpn;
	c->info.remote_qpn = c->remote.qpn;
	c->info.local_psn = c->local.psn;
	c->info.remote_psn = c->remote.psn;
	c->info.epoch = r->epoch;
	if (r->interval_ms)
		r->due_ms = srdma_now_ms() + r->interval_ms;
	return 0;
}

static bool is_marker(const struct srdma_rekey *r, const struct ibv_wc *wc)
{
	return wc->status == IBV_WC_SUCCESS && wc->opcode == IBV_WC_RECV &&
	       (wc->wc_flags & IBV_WC_WITH_IMM) && wc->byte_len == 0 &&
	       ntohl(wc->imm_data) == r->rx_token;
}

/* Whether the program gets wc: a receive's slot is no longer posted; our
 * marker's send, the peer's marker and the old QP's flushed receives are
 * the library's. */
static bool take_one(struct srdma_conn *c, const struct ibv_wc *wc)
{
	struct srdma_rekey *r = &c->rk;
	bool on_old = r->state != RK_IDLE && r->qp_old && wc->qp_num == r->qp_old->qp_num;
	unsigned int slot = (unsigned int)wc->wr_id;

	if (wc->wr_id == SRDMA_WR_ID_REKEY) {
		/* Our marker's send (a failure is the old QP's, and the
		 * program hears of it: the connection is over). */
		if (on_old && wc->status == IBV_WC_SUCCESS) {
			r->marker_done = true;
			return false;
		}
		return wc->status != IBV_WC_SUCCESS;
	}
	if (wc->status == IBV_WC_SUCCESS && !(wc->opcode & IBV_WC_RECV))
		return true;		/* the program's send */
	if (wc->wr_id >= SRDMA_SLOTS)
		return true;		/* a failed send of the program's */
	if (on_old && r->old_failed && wc->status == IBV_WC_WR_FLUSH_ERR) {
		/* A receive the retired QP held: up again on the new one. */
		r->on_old &= ~(1u << slot);
		if (srdma_verbs_post_recv_on(c, r->qp_new, slot))
			r->failed = true;
		return false;
	}
	if (wc->status != IBV_WC_SUCCESS)
		return true;
	if (on_old && !r->rx_switched && is_marker(r, wc)) {
		if (switch_rx(c, slot))
			r->failed = true;	/* srdma_rekey_tick() ends it */
		return false;
	}
	if (on_old && r->rx_switched) {
		/* After the peer's marker its old stream is over: whatever
		 * else arrives there someone else sent (an injector who has
		 * the old PSN). Not the program's: the slot goes up on the
		 * new QP. */
		r->stray++;
		r->on_old &= ~(1u << slot);
		if (srdma_verbs_post_recv_on(c, r->qp_new, slot))
			r->failed = true;
		return false;
	}
	c->rx_posted &= ~(1u << slot);
	return true;
}

int srdma_rekey_filter(struct srdma_conn *c, struct ibv_wc *wc, int n, struct srdma_err *err)
{
	int kept = 0;

	for (int i = 0; i < n; i++)
		if (take_one(c, &wc[i]))
			wc[kept++] = wc[i];
	if (post_marker(c, err) || retire(c))
		c->rk.failed = true;	/* srdma_rekey_tick() ends the connection */
	return kept;
}

/* --- timers --- */

/* A step that must talk TLS is waiting: our DONE, or a queued OFFER. */
static bool due_now(const struct srdma_rekey *r)
{
	return (r->state == RK_SWITCHED && r->marker_done && !r->done_sent) ||
	       (r->state == RK_IDLE && r->offer_queued);
}

int srdma_rekey_timeout_ms(const struct srdma_conn *c)
{
	const struct srdma_rekey *r = &c->rk;
	int64_t due, left;

	if (c->shape.sh || !r->peer_can || c->end_rc || !c->established)
		return -1;
	if (r->failed || due_now(r))
		return 0;
	if (r->state != RK_IDLE)
		due = r->deadline_ms;
	else if (r->interval_ms)
		due = r->due_ms;
	else
		return -1;
	left = due - srdma_now_ms();
	return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

int srdma_rekey_tick(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_rekey *r = &c->rk;
	int64_t now = srdma_now_ms();

	if (c->shape.sh || !r->peer_can || !c->established)
		return 0;
	if (r->failed)
		return rk_fail(err, -EIO, "rekey", "the move to the new QP failed");
	if (r->state == RK_SWITCHED && r->marker_done && !r->done_sent) {
		int rc = send_rekey(c, SRDMA_REKEY_DONE, err);

		if (rc)
			return rc;
		r->done_sent = true;
		if (retire(c))
			return rk_fail(err, -EIO, "rekey", "cannot fail the old QP");
	}
	if (r->state == RK_IDLE && r->offer_queued) {
		struct srdma_rekey_msg m = r->queued;

		r->offer_queued = false;
		return answer(c, &m, err);
	}
	if (r->state != RK_IDLE) {
		if (now >= r->deadline_ms)
			return rk_fail(err, -ETIMEDOUT, "rekey",
				       "the peer did not finish a rekey in time");
		return post_marker(c, err);
	}
	if (r->interval_ms && now >= r->due_ms) {
		r->due_ms = now + r->interval_ms;
		return srdma_conn_rekey(c, err);
	}
	return 0;
}

void srdma_rekey_free(struct srdma_conn *c)
{
	struct srdma_rekey *r = &c->rk;

	if (r->qp_old && r->qp_old != c->qp)
		ibv_destroy_qp(r->qp_old);
	if (r->qp_new && r->qp_new != c->qp)
		ibv_destroy_qp(r->qp_new);
	r->qp_old = r->qp_new = r->rx_qp = NULL;
	OPENSSL_cleanse(r->key_tx, sizeof(r->key_tx));
	OPENSSL_cleanse(r->key_rx, sizeof(r->key_rx));
}
