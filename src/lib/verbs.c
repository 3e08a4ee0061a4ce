/*
 * Verbs: the device, and per connection its PD, completion channel, CQs, RC
 * QP and registered memory; the QP moves RESET -> INIT -> RTR -> RTS with
 * the PSNs negotiated over TLS, and ibv_query_qp must confirm them.
 *
 * Least privilege: send and receive slots have local access only; only the
 * server's write window allows REMOTE_WRITE, and only the server's QP accepts
 * remote writes. Nothing allows remote read or atomics.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>

#include "srdma_internal.h"

static int verr(struct srdma_err *err, int rc, const char *step)
{
	/* Verbs calls return a positive errno, or -1/NULL with errno set. */
	int e = rc > 0 ? rc : (errno ? errno : EIO);

	srdma_set_err(err, -e, step, "%s", strerror(e));
	return -e;
}

static bool gid_is_zero(const union ibv_gid *g)
{
	static const union ibv_gid zero;

	return memcmp(g, &zero, sizeof(zero)) == 0;
}

static bool gid_is_ipv4(const union ibv_gid *g)
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(g->raw, prefix, sizeof(prefix)) == 0;
}

/* A RoCE v2 GID holding an IPv4 address, else any RoCE v2 GID, else 0. */
static int pick_gid(struct srdma_dev *d)
{
	int best = -1;

	for (int i = 0; i < d->port_attr.gid_tbl_len; i++) {
		struct ibv_gid_entry e;

		if (ibv_query_gid_ex(d->ctx, d->port, (uint32_t)i, &e, 0))
			continue;
		if (e.gid_type != IBV_GID_TYPE_ROCE_V2 || gid_is_zero(&e.gid))
			continue;
		if (gid_is_ipv4(&e.gid))
			return i;
		if (best < 0)
			best = i;
	}
	return best < 0 ? 0 : best;
}

int srdma_dev_open(struct srdma_dev *d, const struct srdma_rdma_opts *o,
		   struct srdma_err *err)
{
	struct ibv_device **list;
	struct ibv_device *dev = NULL;
	int n, rc;

	memset(d, 0, sizeof(*d));
	list = ibv_get_device_list(&n);
	if (!list)
		return verr(err, -1, "list RDMA devices");
	for (int i = 0; i < n && !dev; i++)
		if (!o->dev_name || strcmp(ibv_get_device_name(list[i]), o->dev_name) == 0)
			dev = list[i];
	if (!dev) {
		if (o->dev_name)
			srdma_set_err(err, -ENODEV, "open RDMA device",
				      "no RDMA device named '%s' (%d found)", o->dev_name, n);
		else
			srdma_set_err(err, -ENODEV, "open RDMA device",
				      "no RDMA device found");
		ibv_free_device_list(list);
		return -ENODEV;
	}
	snprintf(d->name, sizeof(d->name), "%s", ibv_get_device_name(dev));
	d->ctx = ibv_open_device(dev);
	ibv_free_device_list(list);
	if (!d->ctx)
		return verr(err, -1, "open RDMA device");

	d->port = (uint8_t)(o->ib_port > 0 ? o->ib_port : 1);
	rc = ibv_query_port(d->ctx, d->port, &d->port_attr);
	if (rc) {
		rc = verr(err, rc, "query port");
		goto fail;
	}
	if (d->port_attr.state != IBV_PORT_ACTIVE) {
		srdma_set_err(err, -ENETDOWN, "query port", "%s port %u is %s, not ACTIVE",
			      d->name, d->port, ibv_port_state_str(d->port_attr.state));
		rc = -ENETDOWN;
		goto fail;
	}
	d->roce = d->port_attr.link_layer == IBV_LINK_LAYER_ETHERNET;
	if (o->gid_index >= 0) {
		/* The address vector's sgid_index is 8 bits: a larger index
		 * would be cut to another GID, not refused. */
		if (o->gid_index > UINT8_MAX) {
			srdma_set_err(err, -EINVAL, "query GID",
				      "GID index %d out of range (an address vector holds 0..255)",
				      o->gid_index);
			rc = -EINVAL;
			goto fail;
		}
		if (o->gid_index >= d->port_attr.gid_tbl_len) {
			srdma_set_err(err, -EINVAL, "query GID",
				      "GID index %d out of range (table has %d)",
				      o->gid_index, d->port_attr.gid_tbl_len);
			rc = -EINVAL;
			goto fail;
		}
		d->gid_index = o->gid_index;
	} else {
		d->gid_index = d->roce ? pick_gid(d) : 0;
	}
	rc = ibv_query_gid(d->ctx, d->port, d->gid_index, &d->gid);
	if (rc) {
		rc = verr(err, rc, "query GID");
		goto fail;
	}
	if (d->roce && gid_is_zero(&d->gid)) {
		srdma_set_err(err, -EINVAL, "query GID", "GID index %d is empty",
			      d->gid_index);
		rc = -EINVAL;
		goto fail;
	}
	return 0;
fail:
	ibv_close_device(d->ctx);
	d->ctx = NULL;
	return rc;
}

void srdma_dev_close(struct srdma_dev *d)
{
	if (d && d->ctx) {
		ibv_close_device(d->ctx);
		d->ctx = NULL;
	}
}

/*
 * Register len bytes. Memory the peer may address (IBV_ACCESS_REMOTE_WRITE)
 * is registered zero-based (iova 0) where the device allows it, so the
 * address the peer is told is an offset, not where our heap lies.
 */
static int reg_buf(struct srdma_conn *c, struct srdma_buf *b, struct ibv_mr **mr,
		   uint64_t *iova, size_t len, int access, const char *step,
		   struct srdma_err *err)
{
	/* Pages of their own, zeroed, given back to the system at teardown:
	 * from malloc, a server's arenas would keep the peak of its clients'
	 * buffers after they leave. */
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int rc;

	if (p == MAP_FAILED) {
		rc = errno;
		srdma_set_err(err, -rc, step, "allocate %zu bytes: %s", len, strerror(rc));
		return -rc;
	}
	*mr = NULL;
	*iova = 0;
	if (access & IBV_ACCESS_REMOTE_WRITE)
		*mr = ibv_reg_mr_iova2(c->pd, p, len, 0, (unsigned int)access);
	if (!*mr) {	/* local memory, or a device without zero-based MRs */
		*mr = ibv_reg_mr(c->pd, p, len, access);
		*iova = (uintptr_t)p;
	}
	if (!*mr) {
		rc = verr(err, -1, step);
		munmap(p, len);
		return rc;
	}
	b->addr = p;
	b->len = len;
	b->lkey = (*mr)->lkey;
	b->rkey = (*mr)->rkey;
	return 0;
}

static void dereg_buf(struct srdma_buf *b, struct ibv_mr **mr)
{
	if (*mr)
		ibv_dereg_mr(*mr);
	*mr = NULL;
	if (b->addr)
		munmap(b->addr, b->len);
	memset(b, 0, sizeof(*b));
}

/* Receive slot slot of c's own (the default mode), on qp. */
static int post_recv_on(struct srdma_conn *c, struct ibv_qp *qp, unsigned int slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)c->recv_buf.addr + (uint64_t)slot * c->shape.buf_size,
		.length = (uint32_t)c->shape.buf_size,
		.lkey = c->recv_buf.lkey,
	};
	struct ibv_recv_wr wr = {
		.wr_id = slot,
		.sg_list = &sge,
		.num_sge = 1,
	};
	struct ibv_recv_wr *bad;

	int rc;

	if (slot >= SRDMA_SLOTS)
		return -EINVAL;
	rc = -ibv_post_recv(qp, &wr, &bad);
	if (!rc)
		c->rx_posted |= 1u << slot;
	return rc;
}

int srdma_verbs_post_recv_on(struct srdma_conn *c, struct ibv_qp *qp, unsigned int slot)
{
	return post_recv_on(c, qp, slot);
}

/* On the QP that receives: c's, or during a rekey the one the peer's
 * stream is on (rekey.c). */
static int post_own_recv(struct srdma_conn *c, unsigned int slot)
{
	return post_recv_on(c, c->rk.rx_qp ? c->rk.rx_qp : c->qp, slot);
}

int srdma_conn_post_recv(struct srdma_conn *c, unsigned int slot)
{
	return c->shape.sh ? srdma_shared_post_recv(c, slot) : post_own_recv(c, slot);
}

static int qp_to_init(struct srdma_conn *c, struct ibv_qp *qp, struct srdma_err *err)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.pkey_index = 0,
		.port_num = c->dev->port,
		/* Only the server's QP takes remote writes (into its window). */
		.qp_access_flags = c->window.len ? IBV_ACCESS_REMOTE_WRITE : 0,
	};
	int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			       IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);

	return rc ? verr(err, rc, "modify QP to INIT") : 0;
}

/*
 * The RC QP on c's CQs, taken to INIT: receives from its own queue
 * (srq NULL, SRDMA_SLOTS of them) or from the shared pool's SRQ.
 */
static int create_qp_as(struct srdma_conn *c, struct ibv_srq *srq, struct ibv_qp **out,
			struct srdma_err *err)
{
	struct ibv_qp_init_attr qa;
	struct ibv_qp *qp;
	int rc;

	memset(&qa, 0, sizeof(qa));
	qa.send_cq = c->send_cq;
	qa.recv_cq = c->recv_cq;
	qa.srq = srq;
	qa.qp_type = IBV_QPT_RC;
	qa.sq_sig_all = 0;	/* sends complete when IBV_SEND_SIGNALED */
	qa.cap.max_send_wr = c->shape.send_depth;
	qa.cap.max_recv_wr = srq ? 0 : SRDMA_SLOTS;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = srq ? 0 : 1;
	/* Inline sends only when asked: on Soft-RoCE a QP that can take
	 * them is slower even for sends that do not use them (bench/compare:
	 * +1.5 us per 8-byte one-way trip under emulation). */
	qa.cap.max_inline_data = c->shape.max_inline;
	qp = ibv_create_qp(c->pd, &qa);
	if (!qp) {
		rc = verr(err, -1, "create QP");
		if (c->shape.max_inline && err)
			snprintf(err->msg + strlen(err->msg), sizeof(err->msg) - strlen(err->msg),
				 " (with %u bytes of inline data)", c->shape.max_inline);
		return rc;
	}
	*out = qp;	/* the caller's from here: destroyed with it on failure */
	c->shape.max_inline = qa.cap.max_inline_data;
	return qp_to_init(c, qp, err);
}

static int create_qp(struct srdma_conn *c, struct ibv_srq *srq, struct srdma_err *err)
{
	return create_qp_as(c, srq, &c->qp, err);
}

int srdma_verbs_another_qp(struct srdma_conn *c, struct ibv_qp **out, struct srdma_err *err)
{
	return create_qp_as(c, NULL, out, err);
}

int srdma_window_fault;	/* tests only: see srdma_internal.h */

/*
 * Shared mode (the server's): the listener's PD and receive pool; a send
 * CQ of the connection's own on the shared channel (armed at handover); a
 * window registered without remote access, for a type 2 memory window
 * bound to this QP once it is in RTS (srdma_verbs_bind_window()).
 */
static int create_shared(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_shared *sh = c->shape.sh;
	int rc, access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND;

	errno = 0;
	c->pd = sh->pd;
	c->recv_cq = sh->rcq;
	c->recv_buf = sh->pool;
	c->send_cq = ibv_create_cq(c->dev->ctx, (int)c->shape.send_depth, NULL, sh->channel, 0);
	if (!c->send_cq)
		return verr(err, -1, "create send CQ");
	if (srdma_window_fault == 1)	/* tests: the design the MW replaces */
		access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	rc = reg_buf(c, &c->window, &c->window_mr, &c->window_iova, c->shape.buf_size,
		     access, "register write window", err);
	if (rc)
		return rc;
	if (srdma_window_fault != 1) {
		c->mw = ibv_alloc_mw(c->pd, IBV_MW_TYPE_2);
		if (!c->mw)
			return verr(err, -1, "allocate memory window");
	}
	return create_qp(c, sh->srq, err);
}

int srdma_verbs_create(struct srdma_conn *c, bool with_window,
		       struct srdma_err *err)
{
	size_t slots_len = (size_t)SRDMA_SLOTS * c->shape.buf_size;
	uint64_t iova;
	int rc, fl;

	if (c->shape.sh)
		return create_shared(c, err);

	c->pd = ibv_alloc_pd(c->dev->ctx);
	if (!c->pd)
		return verr(err, -1, "allocate PD");
	c->channel = ibv_create_comp_channel(c->dev->ctx);
	if (!c->channel)
		return verr(err, -1, "create completion channel");
	/* Non-blocking: ibv_get_cq_event() takes an event only when one is
	 * there, so an event loop never sleeps inside the library. */
	fl = fcntl(c->channel->fd, F_GETFL);
	if (fl < 0 || fcntl(c->channel->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return verr(err, -1, "create completion channel");
	c->send_cq = ibv_create_cq(c->dev->ctx, (int)(c->shape.send_depth + SRDMA_SLOTS), NULL,
				   c->channel, 0);
	if (!c->send_cq)
		return verr(err, -1, "create send CQ");
	c->recv_cq = ibv_create_cq(c->dev->ctx, SRDMA_SLOTS * 2, NULL, c->channel, 0);
	if (!c->recv_cq)
		return verr(err, -1, "create receive CQ");

	rc = reg_buf(c, &c->send_buf, &c->send_mr, &iova, slots_len, 0,
		     "register send buffer", err);
	if (!rc)
		rc = reg_buf(c, &c->recv_buf, &c->recv_mr, &iova, slots_len,
			     IBV_ACCESS_LOCAL_WRITE, "register receive buffer", err);
	if (!rc && with_window)
		rc = reg_buf(c, &c->window, &c->window_mr, &c->window_iova, c->shape.buf_size,
			     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
			     "register write window", err);
	if (rc)
		return rc;

	rc = create_qp(c, NULL, err);
	if (rc)
		return rc;
	/* Receives go up before the peer can send. */
	for (unsigned int i = 0; i < SRDMA_SLOTS; i++) {
		rc = post_own_recv(c, i);
		if (rc)
			return verr(err, -rc, "post receive");
	}
	if (ibv_req_notify_cq(c->send_cq, 0) || ibv_req_notify_cq(c->recv_cq, 0))
		return verr(err, -1, "arm CQ");
	return 0;
}

int srdma_verbs_local_params(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_params *p = &c->local;
	int rc;

	memset(p, 0, sizeof(*p));
	if (c->shape.psn_mode == SRDMA_PSN_EXPORTER) {
		rc = srdma_psn_from_exporter(c, &p->psn, &c->exporter_peer_psn, err);
		if (rc)
			return rc;
	} else {
		rc = srdma_psn_generate(&p->psn);
		if (rc) {
			/* No fallback: without a secret PSN there is no connection. */
			srdma_set_err(err, rc, "generate PSN", "getrandom: %s", strerror(-rc));
			return rc;
		}
	}
	p->qpn = c->qp->qp_num;
	p->lid = c->dev->port_attr.lid;
	memcpy(p->gid, c->dev->gid.raw, sizeof(p->gid));
	p->mtu = (uint8_t)c->dev->port_attr.active_mtu;
	if (c->window.len) {
		/* Shared mode: srdma_verbs_bind_window() replaces both. */
		p->addr = c->window_iova;	/* 0 when registered zero-based */
		p->rkey = c->window.rkey;
		p->len = (uint32_t)c->window.len;
	}
	return 0;
}

static int qp_to_rtr(struct srdma_conn *c, struct ibv_qp *qp, const struct srdma_params *peer,
		     enum ibv_mtu mtu, struct srdma_err *err)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_RTR,
		.path_mtu = mtu,
		.dest_qp_num = peer->qpn,
		.rq_psn = peer->psn,
		.max_dest_rd_atomic = 0,	/* no RDMA READ or atomics */
		.min_rnr_timer = 12,
		.ah_attr = {
			.dlid = peer->lid,
			.port_num = c->dev->port,
		},
	};
	int rc;

	if (c->dev->roce) {
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, peer->gid, sizeof(peer->gid));
		a.ah_attr.grh.sgid_index = (uint8_t)c->dev->gid_index;
		a.ah_attr.grh.hop_limit = 64;
	}
	rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			   IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			   IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
	return rc ? verr(err, rc, "modify QP to RTR") : 0;
}

static int qp_to_rts(struct ibv_qp *qp, const struct srdma_params *local, struct srdma_err *err)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_RTS,
		.sq_psn = local->psn,
		.timeout = 14,
		.retry_cnt = 7,
		.rnr_retry = 7,
		.max_rd_atomic = 0,
	};
	int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN |
			       IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
			       IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);

	return rc ? verr(err, rc, "modify QP to RTS") : 0;
}

/* The device must hold what we negotiated, or we refuse the connection. */
static int qp_verify(struct ibv_qp *qp, const struct srdma_params *local,
		     const struct srdma_params *remote, struct srdma_err *err)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;
	int rc = ibv_query_qp(qp, &a, IBV_QP_STATE | IBV_QP_RQ_PSN |
			      IBV_QP_SQ_PSN | IBV_QP_DEST_QPN, &ia);

	if (rc)
		return verr(err, rc, "verify QP");
	if (a.qp_state != IBV_QPS_RTS || a.rq_psn != remote->psn ||
	    a.sq_psn != local->psn || a.dest_qp_num != remote->qpn) {
		srdma_set_err(err, -EPROTO, "verify QP",
			      "QP does not hold the negotiated values (state %d, dest QPN %u/%u)",
			      a.qp_state, a.dest_qp_num, remote->qpn);
		return -EPROTO;
	}
	return 0;
}

int srdma_verbs_connect(struct srdma_conn *c, struct srdma_err *err)
{
	enum ibv_mtu mtu = c->dev->port_attr.active_mtu;
	int rc;

	if ((enum ibv_mtu)c->remote.mtu < mtu)
		mtu = (enum ibv_mtu)c->remote.mtu;
	/* Shared mode: receives are routed to c before any can arrive. */
	rc = c->shape.sh ? srdma_shared_attach(c, err) : 0;
	if (!rc)
		rc = qp_to_rtr(c, c->qp, &c->remote, mtu, err);
	if (!rc)
		rc = qp_to_rts(c->qp, &c->local, err);
	if (!rc)
		rc = qp_verify(c->qp, &c->local, &c->remote, err);
	if (rc)
		return rc;
	c->info.path_mtu = mtu;
	return 0;
}

int srdma_verbs_connect_qp(struct srdma_conn *c, struct ibv_qp *qp,
			   const struct srdma_params *local, const struct srdma_params *remote,
			   struct srdma_err *err)
{
	int rc = qp_to_rtr(c, qp, remote, c->info.path_mtu, err);

	if (!rc)
		rc = qp_to_rts(qp, local, err);
	if (!rc)
		rc = qp_verify(qp, local, remote, err);
	return rc;
}

void srdma_verbs_destroy(struct srdma_conn *c)
{
	if (c->shape.sh) {
		/* The MW, QP and send CQ go in srdma_shared_detach(); the
		 * PD, receive CQ and pool are the listener's. */
		srdma_shared_detach(c);
		dereg_buf(&c->window, &c->window_mr);
		c->pd = NULL;
		c->recv_cq = NULL;
		memset(&c->recv_buf, 0, sizeof(c->recv_buf));
		return;
	}
	/* Reverse order of creation (a rekey's other QP went first). */
	if (c->qp)
		ibv_destroy_qp(c->qp);
	c->qp = NULL;
	dereg_buf(&c->window, &c->window_mr);
	dereg_buf(&c->recv_buf, &c->recv_mr);
	dereg_buf(&c->send_buf, &c->send_mr);
	if (c->recv_cq)
		ibv_destroy_cq(c->recv_cq);
	if (c->send_cq)
		ibv_destroy_cq(c->send_cq);
	c->recv_cq = c->send_cq = NULL;
	if (c->channel)
		ibv_destroy_comp_channel(c->channel);
	c->channel = NULL;
	if (c->pd)
		ibv_dealloc_pd(c->pd);
	c->pd = NULL;
}

/* Take the completion events that have arrived (the fd is non-blocking). */
static int take_events(struct srdma_conn *c)
{
	struct ibv_cq *cq;
	void *ctx;

	while (ibv_get_cq_event(c->channel, &cq, &ctx) == 0)
		ibv_ack_cq_events(cq, 1);
	return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -EIO;
}

static int poll_both(struct srdma_conn *c, struct ibv_wc *wc, int max)
{
	int n = ibv_poll_cq(c->recv_cq, max, wc), m;

	if (n < 0)
		return -EIO;
	if (n == max)
		return n;
	m = ibv_poll_cq(c->send_cq, max - n, wc + n);
	return m < 0 ? -EIO : n + m;
}

/* Up to max of the program's completions: the library's own (a rekey's
 * markers and flushed receives) are taken out, and the CQs polled on
 * until max are found or they run dry (then fewer). */
static int poll_programs(struct srdma_conn *c, struct ibv_wc *wc, int max)
{
	int got = 0;

	while (got < max) {
		int asked = max - got, n = poll_both(c, wc + got, asked);

		if (n < 0)
			return n;
		got += srdma_rekey_filter(c, wc + got, n, NULL);
		if (n < asked)
			break;
	}
	return got;
}

int srdma_conn_poll_wc(struct srdma_conn *c, struct ibv_wc *wc, int max)
{
	int n, m;

	if (c->shape.sh)
		return -EOPNOTSUPP;
	if (max <= 0)
		return -EINVAL;
	if (take_events(c))
		return -EIO;
	n = poll_programs(c, wc, max);
	if (n < 0 || n == max)
		return n;	/* full: the caller comes back, unarmed */
	/* Drained: arm, then look once more, for what came before the arming. */
	if (ibv_req_notify_cq(c->send_cq, 0) || ibv_req_notify_cq(c->recv_cq, 0))
		return -EIO;
	m = poll_programs(c, wc + n, max - n);
	return m < 0 ? m : n + m;
}

int srdma_conn_next_wc(struct srdma_conn *c, int timeout_ms, struct ibv_wc *wc)
{
	int64_t deadline = timeout_ms < 0 ? -1 : srdma_now_ms() + timeout_ms;

	if (c->shape.sh)
		return -EOPNOTSUPP;
	for (;;) {
		struct pollfd p[2] = { { .fd = c->channel->fd, .events = POLLIN },
				       { .fd = c->fd, .events = POLLIN } };
		/* One completion, or none with both CQs armed again. */
		int n = srdma_conn_poll_wc(c, wc, 1), wait, ctrl;

		if (n)
			return n;
		/* The control channel is served too: the peer's probes are
		 * answered, and its leaving ends the wait. */
		if (srdma_conn_poll_ctrl(c, NULL))
			return -ENOTCONN;
		/* Looked at both: time up? (Every pass, not only when poll()
		 * found nothing: a peer that keeps the control fd readable
		 * must not stretch the wait.) */
		wait = srdma_ms_left(deadline);
		if (wait == 0)
			return 0;
		ctrl = srdma_conn_ctrl_timeout_ms(c);
		if (ctrl >= 0 && (wait < 0 || ctrl < wait))
			wait = ctrl;
		if (poll(p, 2, wait) < 0 && errno != EINTR)
			return -errno;
	}
}

/* The control channel ended a setup step: say how, as it happened. */
static int setup_peer_ended(int how, const struct srdma_err *peer, const char *step,
			    struct srdma_err *err)
{
	switch (how) {
	case SRDMA_CLOSE_BYE:
		srdma_set_err(err, -ECONNRESET, step,
			      "the peer closed the connection (BYE) before setup finished");
		return -ECONNRESET;
	case SRDMA_CLOSE_ERROR:
		srdma_set_err(err, -ECONNREFUSED, step, "the peer refused: %s", peer->msg);
		if (err)
			err->peer_code = peer->peer_code;
		return -ECONNREFUSED;
	case SRDMA_CLOSE_PROTOCOL:
		srdma_set_err(err, peer->code, step, "%s: %s", peer->step, peer->msg);
		return peer->code;
	default:
		srdma_set_err(err, peer->code, step, "%s", peer->msg);
		return peer->code;
	}
}

/*
 * Shared mode: the channel belongs to the program's loop, so a setup looks
 * at its CQ (its own send CQ, or its share of the receive CQ) itself,
 * sleeping on the control socket between looks: 1 ms, doubling to 32 ms.
 * A binding message or a send completes within a round trip or two, so a
 * setup rarely sleeps more than a few times.
 */
static int wait_shared(struct srdma_conn *c, struct ibv_cq *cq, int64_t deadline,
		       const char *step, const char *late, struct ibv_wc *wc,
		       struct srdma_err *err)
{
	int nap = 1;

	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		int n = cq == c->recv_cq ? srdma_shared_take_recv(c, wc) : ibv_poll_cq(cq, 1, wc);
		int left;

		if (n < 0) {
			srdma_set_err(err, -EIO, step, "poll CQ");
			return -EIO;
		}
		if (n == 1)
			return 1;
		left = srdma_ms_left(deadline);
		if (left == 0) {
			srdma_set_err(err, -ETIMEDOUT, step, "%s", late);
			return -ETIMEDOUT;
		}
		srdma_peer_wait_begin();
		n = poll(&p, 1, left >= 0 && left < nap ? left : nap);
		srdma_peer_wait_end();
		if (n < 0 && errno != EINTR) {
			srdma_set_err(err, -errno, step, "poll: %s", strerror(errno));
			return -errno;
		}
		if (nap < 32)
			nap *= 2;
		if (n > 0 && p.revents) {
			struct srdma_err peer;
			int how = srdma_conn_poll_ctrl(c, &peer);

			if (how)
				return setup_peer_ended(how, &peer, step, err);
		}
	}
}

int srdma_verbs_bind_window(struct srdma_conn *c, int64_t deadline, struct srdma_err *err)
{
	struct ibv_send_wr wr = { .wr_id = 0, .opcode = IBV_WR_BIND_MW,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct ibv_wc wc;
	int rc;

	if (!c->mw)	/* tests: srdma_window_fault, the MR's own rkey */
		return 0;
	wr.bind_mw.mw = c->mw;
	wr.bind_mw.rkey = ibv_inc_rkey(c->mw->rkey);
	wr.bind_mw.bind_info.mr = c->window_mr;
	wr.bind_mw.bind_info.addr = (uintptr_t)c->window.addr;
	wr.bind_mw.bind_info.length = c->window.len;
	wr.bind_mw.bind_info.mw_access_flags = IBV_ACCESS_REMOTE_WRITE;
	rc = ibv_post_send(c->qp, &wr, &bad);
	if (rc) {
		srdma_set_err(err, -rc, "bind memory window", "post: %s", strerror(rc));
		return -rc;
	}
	rc = wait_shared(c, c->send_cq, deadline, "bind memory window",
			 "the memory window's bind did not complete in time", &wc, err);
	if (rc < 0)
		return rc;
	if (wc.status != IBV_WC_SUCCESS) {
		srdma_set_err(err, -EIO, "bind memory window", "%s", ibv_wc_status_str(wc.status));
		return -EIO;
	}
	c->mw->rkey = wr.bind_mw.rkey;
	c->local.rkey = wr.bind_mw.rkey;
	c->window.rkey = wr.bind_mw.rkey;	/* what srdma_conn_window() says */
	c->local.addr = (uintptr_t)c->window.addr;
	return 0;
}

int srdma_conn_wait_cq(struct srdma_conn *c, struct ibv_cq *cq, int64_t deadline,
		       const char *step, const char *late, struct ibv_wc *wc,
		       struct srdma_err *err)
{
	if (c->shape.sh)
		return wait_shared(c, cq, deadline, step, late, wc, err);
	for (;;) {
		struct pollfd p[2] = { { .fd = c->channel->fd, .events = POLLIN },
				       { .fd = c->fd, .events = POLLIN } };
		struct ibv_cq *ev_cq;
		void *ctx;
		int n = ibv_poll_cq(cq, 1, wc);

		if (n == 0) {
			/* Arm, then look again: a completion that came before
			 * the arming raises no event. */
			if (ibv_req_notify_cq(cq, 0)) {
				srdma_set_err(err, -EIO, step, "arm CQ");
				return -EIO;
			}
			n = ibv_poll_cq(cq, 1, wc);
		}
		if (n < 0) {
			srdma_set_err(err, -EIO, step, "poll CQ");
			return -EIO;
		}
		if (n == 1)
			return 1;
		srdma_peer_wait_begin();
		n = poll(p, 2, srdma_ms_left(deadline));
		srdma_peer_wait_end();
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			srdma_set_err(err, -errno, step, "poll: %s", strerror(errno));
			return -errno;
		}
		/* Every pass: a peer that keeps the control fd readable (tiny
		 * records) must not stretch the setup past its deadline. */
		if (n == 0 || srdma_ms_left(deadline) == 0) {
			srdma_set_err(err, -ETIMEDOUT, step, "%s", late);
			return -ETIMEDOUT;
		}
		if (p[1].revents) {
			struct srdma_err peer;
			int how = srdma_conn_poll_ctrl(c, &peer);

			if (how)
				return setup_peer_ended(how, &peer, step, err);
		}
		if (p[0].revents && ibv_get_cq_event(c->channel, &ev_cq, &ctx) == 0)
			ibv_ack_cq_events(ev_cq, 1);
	}
}
