/*
 * Shared mode: the connections of one listener share a PD, a receive pool
 * behind a shared receive queue (SRQ), the receive CQ and one completion
 * channel, so an idle connection costs its QP's send queue, a small send
 * CQ, its write window and its TLS state, not 33 pinned slots.
 *
 * Isolation: the pool has local access only (nothing remote reads or
 * writes it except as the target of a SEND); each connection's write
 * window is its own memory, registered without remote access and exposed
 * through a type 2 memory window bound to that connection's QP (verbs.c),
 * so a client's QP cannot write another client's window although all
 * share the PD. Receive completions are routed by QP number: a QP's entry
 * is removed only after the QP is destroyed and the receive CQ drained, so
 * a QP number the device hands out again never inherits a stale message.
 *
 * Fairness: the receive CQ has one entry per pool slot and holds at most
 * one completion per slot, so no client can overflow it (a per-connection
 * receive CQ could be overflowed by its client, losing the slot that
 * failed). What a client holds is bounded by the program (srdma.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "srdma_internal.h"

static int serr(struct srdma_err *err, const char *step)
{
	int e = errno ? errno : EIO;

	srdma_set_err(err, -e, step, "%s", strerror(e));
	return -e;
}

unsigned int srdma_shared_hold_max = SRDMA_SLOTS;	/* tests: see srdma_internal.h */

static void wake(struct srdma_shared *sh)
{
	uint64_t one = 1;
	ssize_t n = write(sh->evfd, &one, sizeof(one));

	(void)n;	/* a full counter is awake already */
}

/* --- QP number -> connection --- */

static unsigned int map_hash(uint32_t qpn, unsigned int cap)
{
	return (qpn * 2654435761u) & (cap - 1);
}

static struct srdma_conn *map_find(struct srdma_shared *sh, uint32_t qpn)
{
	for (unsigned int i = map_hash(qpn, sh->map_cap), n = 0; n < sh->map_cap;
	     i = (i + 1) & (sh->map_cap - 1), n++) {
		if (!sh->map[i])
			return NULL;
		if (sh->map_qpn[i] == qpn)
			return sh->map[i];
	}
	return NULL;
}

static int map_grow(struct srdma_shared *sh)
{
	unsigned int cap = sh->map_cap * 2;
	struct srdma_conn **map = calloc(cap, sizeof(*map));
	uint32_t *qpn = calloc(cap, sizeof(*qpn));

	if (!map || !qpn) {
		free(map);
		free(qpn);
		return -ENOMEM;
	}
	for (unsigned int i = 0; i < sh->map_cap; i++) {
		unsigned int j;

		if (!sh->map[i])
			continue;
		for (j = map_hash(sh->map_qpn[i], cap); map[j]; j = (j + 1) & (cap - 1))
			;
		map[j] = sh->map[i];
		qpn[j] = sh->map_qpn[i];
	}
	free(sh->map);
	free(sh->map_qpn);
	sh->map = map;
	sh->map_qpn = qpn;
	sh->map_cap = cap;
	return 0;
}

static int map_add(struct srdma_shared *sh, uint32_t qpn, struct srdma_conn *c)
{
	unsigned int i;

	if ((sh->map_len + 1) * 2 > sh->map_cap && map_grow(sh))
		return -ENOMEM;
	for (i = map_hash(qpn, sh->map_cap); sh->map[i]; i = (i + 1) & (sh->map_cap - 1))
		if (sh->map_qpn[i] == qpn)
			return -EEXIST;
	sh->map[i] = c;
	sh->map_qpn[i] = qpn;
	sh->map_len++;
	return 0;
}

/* Linear probing: remove, then put back the run that followed. */
static void map_del(struct srdma_shared *sh, uint32_t qpn, struct srdma_conn *c)
{
	unsigned int mask = sh->map_cap - 1, i = map_hash(qpn, sh->map_cap);

	for (; sh->map[i]; i = (i + 1) & mask)
		if (sh->map_qpn[i] == qpn && sh->map[i] == c)
			break;
	if (!sh->map[i])
		return;
	sh->map[i] = NULL;
	sh->map_len--;
	for (i = (i + 1) & mask; sh->map[i]; i = (i + 1) & mask) {
		struct srdma_conn *m = sh->map[i];
		uint32_t q = sh->map_qpn[i];

		sh->map[i] = NULL;
		sh->map_len--;
		map_add(sh, q, m);	/* room: it was there */
	}
}

/* --- the pool --- */

/* Give slot back to the SRQ (lock held). A failed post (which verbs only
 * does for a full or broken SRQ) leaves the slot out, counted. */
static int post_slot(struct srdma_shared *sh, unsigned int slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)sh->pool.addr + (uint64_t)slot * sh->buf_size,
		.length = (uint32_t)sh->buf_size,
		.lkey = sh->pool.lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = slot, .sg_list = &sge, .num_sge = 1 }, *bad;

	struct srdma_conn *c = sh->owner[slot];
	int rc;

	if (c && c->sh_held)
		c->sh_held--;
	sh->owner[slot] = NULL;
	sh->state[slot] = SLOT_POSTED;
	rc = -ibv_post_srq_recv(sh->srq, &wr, &bad);
	if (rc) {
		sh->state[slot] = SLOT_LOST;
		sh->lost++;
	}
	return rc;
}

static void ready_add(struct srdma_shared *sh, struct srdma_conn *c)
{
	if (c->in_ready)
		return;
	c->in_ready = true;
	c->ready_next = NULL;
	if (sh->ready_tail)
		sh->ready_tail->ready_next = c;
	else
		sh->ready_head = c;
	sh->ready_tail = c;
}

static void ready_del(struct srdma_shared *sh, struct srdma_conn *c)
{
	struct srdma_conn **p = &sh->ready_head, *prev = NULL;

	if (!c->in_ready)
		return;
	while (*p && *p != c) {
		prev = *p;
		p = &(*p)->ready_next;
	}
	if (*p)
		*p = c->ready_next;
	if (sh->ready_tail == c)
		sh->ready_tail = prev;
	c->in_ready = false;
	c->ready_next = NULL;
}

/* Move what the receive CQ holds to its connections (lock held). A
 * completion of no connection (closed) gives its slot back. Returns
 * whether a handed-over connection got something. */
static bool drain_rcq(struct srdma_shared *sh)
{
	struct ibv_wc w[32];
	bool app = false;
	int n;

	while ((n = ibv_poll_cq(sh->rcq, 32, w)) > 0) {
		for (int k = 0; k < n; k++) {
			uint32_t slot = (uint32_t)w[k].wr_id;
			struct srdma_conn *c;

			if (w[k].wr_id >= sh->slots)
				continue;	/* not ours: cannot happen */
			c = map_find(sh, w[k].qp_num);
			if (!c || c->overrun) {
				post_slot(sh, slot);
				continue;
			}
			/* A client that holds SRDMA_SLOTS slots (what its own
			 * receive queue would have held), or that sends an
			 * invalidate (on rxe one can unbind another QP's type 2
			 * window by its rkey): its QP is failed, its message
			 * dropped, and its connection told once. */
			if (c->sh_held >= srdma_shared_hold_max ||
			    (w[k].wc_flags & IBV_WC_WITH_INV)) {
				struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };

				post_slot(sh, slot);
				c->overrun = true;
				if (c->qp)
					ibv_modify_qp(c->qp, &a, IBV_QP_STATE);
				if (c->handed) {
					ready_add(sh, c);
					app = true;
				}
				continue;
			}
			c->sh_held++;
			sh->state[slot] = SLOT_QUEUED;
			sh->owner[slot] = c;
			sh->wcs[slot] = w[k];
			sh->next[slot] = SRDMA_NO_SLOT;
			if (c->q_tail != SRDMA_NO_SLOT)
				sh->next[c->q_tail] = slot;
			else
				c->q_head = slot;
			c->q_tail = slot;
			if (c->handed) {
				ready_add(sh, c);
				app = true;
			}
		}
	}
	return app;
}

/* Drain, arm, drain again (a completion between the two raises no event). */
static bool drain_arm_rcq(struct srdma_shared *sh)
{
	bool app = drain_rcq(sh);

	ibv_req_notify_cq(sh->rcq, 0);
	return drain_rcq(sh) || app;
}

static bool pop_queued(struct srdma_shared *sh, struct srdma_conn *c, struct ibv_wc *wc)
{
	uint32_t slot = c->q_head;

	if (slot == SRDMA_NO_SLOT)
		return false;
	*wc = sh->wcs[slot];
	sh->state[slot] = SLOT_GIVEN;
	c->q_head = sh->next[slot];
	if (c->q_head == SRDMA_NO_SLOT)
		c->q_tail = SRDMA_NO_SLOT;
	return true;
}

int srdma_shared_create(struct srdma_shared **out, struct srdma_dev *d, unsigned int slots,
			size_t buf_size, unsigned int max_conns, struct srdma_err *err)
{
	struct srdma_shared *sh = calloc(1, sizeof(*sh));
	struct ibv_srq_init_attr sa = { .attr = { .max_wr = slots, .max_sge = 1 } };
	struct epoll_event ev = { .events = EPOLLIN };
	size_t len = (size_t)slots * buf_size;
	int fl, rc;

	if (!sh) {
		srdma_set_err(err, -ENOMEM, "shared receive pool", "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&sh->lock, NULL);
	sh->epfd = sh->evfd = -1;
	sh->slots = slots;
	sh->buf_size = buf_size;
	sh->map_cap = 64;
	while (sh->map_cap < 2 * max_conns && sh->map_cap < (1u << 24))
		sh->map_cap *= 2;
	sh->owner = calloc(slots, sizeof(*sh->owner));
	sh->state = calloc(slots, sizeof(*sh->state));
	sh->next = calloc(slots, sizeof(*sh->next));
	sh->wcs = calloc(slots, sizeof(*sh->wcs));
	sh->map = calloc(sh->map_cap, sizeof(*sh->map));
	sh->map_qpn = calloc(sh->map_cap, sizeof(*sh->map_qpn));
	if (!sh->owner || !sh->state || !sh->next || !sh->wcs || !sh->map || !sh->map_qpn) {
		srdma_set_err(err, -ENOMEM, "shared receive pool", "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	*out = sh;	/* from here srdma_shared_destroy() frees what was made */
	errno = 0;
	sh->pd = ibv_alloc_pd(d->ctx);
	if (!sh->pd)
		return serr(err, "allocate PD");
	sh->channel = ibv_create_comp_channel(d->ctx);
	if (!sh->channel)
		return serr(err, "create completion channel");
	fl = fcntl(sh->channel->fd, F_GETFL);
	if (fl < 0 || fcntl(sh->channel->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return serr(err, "create completion channel");
	sh->rcq = ibv_create_cq(d->ctx, (int)slots, NULL, sh->channel, 0);
	if (!sh->rcq)
		return serr(err, "create shared receive CQ");
	sh->srq = ibv_create_srq(sh->pd, &sa);
	if (!sh->srq) {
		rc = serr(err, "create shared receive queue");
		if (err)
			snprintf(err->msg + strlen(err->msg), sizeof(err->msg) - strlen(err->msg),
				 " (%u slots)", slots);
		return rc;
	}
	sh->pool.addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sh->pool.addr == MAP_FAILED) {
		sh->pool.addr = NULL;
		return serr(err, "allocate shared receive pool");
	}
	sh->pool.len = len;
	sh->pool_mr = ibv_reg_mr(sh->pd, sh->pool.addr, len, IBV_ACCESS_LOCAL_WRITE);
	if (!sh->pool_mr)
		return serr(err, "register shared receive pool");
	sh->pool.lkey = sh->pool_mr->lkey;
	sh->pool.rkey = sh->pool_mr->rkey;
	for (unsigned int i = 0; i < slots; i++) {
		rc = post_slot(sh, i);
		if (rc) {
			errno = -rc;
			return serr(err, "post shared receive");
		}
	}
	if (ibv_req_notify_cq(sh->rcq, 0))
		return serr(err, "arm CQ");
	sh->epfd = epoll_create1(EPOLL_CLOEXEC);
	sh->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (sh->epfd < 0 || sh->evfd < 0)
		return serr(err, "completion fd");
	ev.data.fd = sh->channel->fd;
	if (epoll_ctl(sh->epfd, EPOLL_CTL_ADD, sh->channel->fd, &ev))
		return serr(err, "completion fd");
	ev.data.fd = sh->evfd;
	if (epoll_ctl(sh->epfd, EPOLL_CTL_ADD, sh->evfd, &ev))
		return serr(err, "completion fd");
	return 0;
fail:
	srdma_shared_destroy(sh);
	*out = NULL;
	return rc;
}

void srdma_shared_destroy(struct srdma_shared *sh)
{
	if (!sh)
		return;
	if (sh->epfd >= 0)
		close(sh->epfd);
	if (sh->evfd >= 0)
		close(sh->evfd);
	if (sh->srq)
		ibv_destroy_srq(sh->srq);
	if (sh->pool_mr)
		ibv_dereg_mr(sh->pool_mr);
	if (sh->pool.addr)
		munmap(sh->pool.addr, sh->pool.len);
	if (sh->rcq)
		ibv_destroy_cq(sh->rcq);
	if (sh->channel)
		ibv_destroy_comp_channel(sh->channel);
	if (sh->pd)
		ibv_dealloc_pd(sh->pd);
	free(sh->owner);
	free(sh->state);
	free(sh->next);
	free(sh->wcs);
	free(sh->map);
	free(sh->map_qpn);
	pthread_mutex_destroy(&sh->lock);
	free(sh);
}

int srdma_shared_attach(struct srdma_conn *c, struct srdma_err *err)
{
	struct srdma_shared *sh = c->shape.sh;
	int rc;

	pthread_mutex_lock(&sh->lock);
	c->q_head = c->q_tail = SRDMA_NO_SLOT;
	rc = map_add(sh, c->qp->qp_num, c);
	if (rc == -EEXIST) {
		/* The device hands out a live QP's number once: the entry is
		 * a destroyed QP's, whose connection is still closing. Its
		 * completions are all in the CQ by now: route them to it,
		 * then the number is ours. */
		struct srdma_conn *old = map_find(sh, c->qp->qp_num);

		if (drain_rcq(sh))
			wake(sh);
		map_del(sh, c->qp->qp_num, old);
		rc = map_add(sh, c->qp->qp_num, c);
	}
	pthread_mutex_unlock(&sh->lock);
	if (rc)
		srdma_set_err(err, rc, "shared receive pool", "QP number %u: %s",
			      c->qp->qp_num, rc == -EEXIST ? "already in use" : "out of memory");
	return rc;
}

void srdma_shared_handover(struct srdma_conn *c)
{
	struct srdma_shared *sh = c->shape.sh;

	pthread_mutex_lock(&sh->lock);
	c->handed = true;
	c->send_cq->cq_context = c;	/* a prepared set was made elsewhere */
	ibv_req_notify_cq(c->send_cq, 0);
	c->send_dirty = true;		/* look once: a completion may precede the arming */
	ready_add(sh, c);
	wake(sh);
	pthread_mutex_unlock(&sh->lock);
}

int srdma_shared_take_recv(struct srdma_conn *c, struct ibv_wc *wc)
{
	struct srdma_shared *sh = c->shape.sh;
	bool app;
	int got;

	pthread_mutex_lock(&sh->lock);
	app = drain_arm_rcq(sh);
	got = c->overrun ? -EPROTO : pop_queued(sh, c, wc);
	if (app)
		wake(sh);
	pthread_mutex_unlock(&sh->lock);
	return got;
}

int srdma_shared_post_recv(struct srdma_conn *c, unsigned int slot)
{
	struct srdma_shared *sh = c->shape.sh;
	int rc;

	if (slot >= sh->slots)
		return -EINVAL;
	pthread_mutex_lock(&sh->lock);
	rc = sh->owner[slot] == c && sh->state[slot] == SLOT_GIVEN ? post_slot(sh, slot)
								    : -EINVAL;
	pthread_mutex_unlock(&sh->lock);
	return rc;
}

void srdma_shared_detach(struct srdma_conn *c)
{
	struct srdma_shared *sh = c->shape.sh;
	uint32_t qpn = c->qp ? c->qp->qp_num : 0;
	bool app;

	/* Out of the program's sight first (a CQ event naming c is ignored
	 * from here on); the slow verbs calls then run without the lock. */
	pthread_mutex_lock(&sh->lock);
	ready_del(sh, c);
	if (c->send_cq)
		c->send_cq->cq_context = NULL;
	c->handed = false;
	pthread_mutex_unlock(&sh->lock);
	/* The window's rkey dies first, then the QP: after ibv_destroy_qp()
	 * nothing more of it reaches the receive CQ. (A CQ event read but
	 * not yet acknowledged by srdma_listener_poll_wc() is acknowledged
	 * under the lock, which ibv_destroy_cq() waits for.) */
	if (c->mw)
		ibv_dealloc_mw(c->mw);
	c->mw = NULL;
	if (c->qp)
		ibv_destroy_qp(c->qp);
	if (c->send_cq)
		ibv_destroy_cq(c->send_cq);
	c->send_cq = NULL;
	if (!c->qp)
		return;
	c->qp = NULL;
	/* What c received is drained to it before its QP number is
	 * forgotten, then every slot it held goes back. */
	pthread_mutex_lock(&sh->lock);
	app = drain_arm_rcq(sh);
	for (unsigned int i = 0; i < sh->slots; i++)
		if (sh->owner[i] == c)
			post_slot(sh, i);
	map_del(sh, qpn, c);
	if (app)
		wake(sh);
	pthread_mutex_unlock(&sh->lock);
}

/* --- the program's side --- */

int srdma_listener_wc_fd(const struct srdma_listener *l)
{
	return l->shared ? l->shared->epfd : -1;
}

int srdma_listener_poll_wc(struct srdma_listener *l, struct srdma_wc *out, int max)
{
	struct srdma_shared *sh = l->shared;
	struct ibv_cq *cq;
	void *ctx;
	uint64_t v;
	bool rcq_event = false;
	int n = 0;

	if (!sh)
		return -EOPNOTSUPP;
	if (max <= 0)
		return -EINVAL;
	pthread_mutex_lock(&sh->lock);
	while (read(sh->evfd, &v, sizeof(v)) > 0)
		;
	while (ibv_get_cq_event(sh->channel, &cq, &ctx) == 0) {
		ibv_ack_cq_events(cq, 1);
		if (cq == sh->rcq) {
			rcq_event = true;
		} else if (ctx) {
			struct srdma_conn *c = ctx;

			c->send_dirty = true;
			ready_add(sh, c);
		}
	}
	if (rcq_event)
		drain_arm_rcq(sh);
	while (n < max && sh->ready_head) {
		struct srdma_conn *c = sh->ready_head;
		bool more = false;

		if (c->overrun && !c->overrun_told && n < max) {
			/* Once: the connection broke the pool's rules. */
			memset(&out[n].wc, 0, sizeof(out[n].wc));
			out[n].wc.wr_id = SRDMA_WR_ID_OVERRUN;
			out[n].wc.status = IBV_WC_REM_INV_REQ_ERR;
			out[n].wc.opcode = IBV_WC_RECV;
			out[n].wc.qp_num = c->local.qpn;
			out[n++].conn = c;
			c->overrun_told = true;
		}
		while (n < max && pop_queued(sh, c, &out[n].wc))
			out[n++].conn = c;
		if (n == max) {
			more = true;
		} else if (c->send_dirty) {
			struct ibv_wc w[16];
			int want = max - n < 16 ? max - n : 16;
			int got = ibv_poll_cq(c->send_cq, want, w);

			if (got < 0)
				got = 0;
			if (got < want) {
				/* Drained: arm, then look again (a completion
				 * before the arming raises no event). */
				int more_got;

				ibv_req_notify_cq(c->send_cq, 0);
				more_got = ibv_poll_cq(c->send_cq, want - got, w + got);
				if (more_got > 0)
					got += more_got;
			}
			for (int k = 0; k < got; k++) {
				out[n].conn = c;
				out[n++].wc = w[k];
			}
			if (got == want)
				more = true;	/* may hold more: look again */
			else
				c->send_dirty = false;	/* drained and armed */
		}
		/* Served: to the back if it may hold more, so one busy
		 * connection does not starve the rest. */
		ready_del(sh, c);
		if (more || c->q_head != SRDMA_NO_SLOT)
			ready_add(sh, c);
	}
	pthread_mutex_unlock(&sh->lock);
	return n;
}
