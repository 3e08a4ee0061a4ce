/*
 * Prepared QPs: the server's verbs work for a connection (PD, completion
 * channel, CQs, registered buffers, QP in INIT, receives posted) done ahead
 * of need by one library thread, so that a setup takes a finished set
 * instead of making one while its client waits. The thread refills the
 * pool as setups take from it; a setup that finds it empty makes its own.
 *
 * A set is taken only after the client's HELLO, never at accept, so
 * connections that never get that far (a silent flood) do not drain it.
 * Everything in a set is private to the connection that takes it, as one
 * made on demand would be: nothing is shared between clients.
 *
 * QPN spread: devices that number QPs in sequence (rxe counts up, and
 * wraps) let an observer of one connection name the next one's QPN, and
 * leave the PSN the only secret an off-path injector lacks. Before each
 * set, the thread makes and destroys a random number of throwaway QPs
 * (below 2^spread_bits, one alive at a time, on a PD and CQ of its own),
 * so that the counter skips that many; setups take sets in random order.
 * The cost is the thread's, off every setup's path.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <string.h>	/* strerror */
#include <time.h>

#include "srdma_internal.h"

/* After a failure (memlock limit, device out of resources) wait this long
 * before trying again; setups make their own meanwhile. */
#define POOL_RETRY_MS 1000

/* Hand one prepared set's verbs resources to dst (which has none); the
 * set's holder is freed right after, without srdma_verbs_destroy(). */
static void move_verbs(struct srdma_conn *dst, const struct srdma_conn *src)
{
	dst->pd = src->pd;
	dst->channel = src->channel;
	dst->send_cq = src->send_cq;
	dst->recv_cq = src->recv_cq;
	dst->qp = src->qp;
	dst->send_buf = src->send_buf;
	dst->recv_buf = src->recv_buf;
	dst->window = src->window;
	dst->send_mr = src->send_mr;
	dst->recv_mr = src->recv_mr;
	dst->window_mr = src->window_mr;
	dst->window_iova = src->window_iova;
	dst->mw = src->mw;
	dst->shape.max_inline = src->shape.max_inline;
}

/* One prepared set, made as a setup would make it. */
static struct srdma_conn *prepare(struct srdma_listener *l)
{
	struct srdma_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = -1;
	c->server = true;
	c->dev = &l->dev;
	c->shape = l->shape;
	if (srdma_verbs_create(c, true, NULL)) {
		srdma_verbs_destroy(c);
		free(c);
		return NULL;
	}
	return c;
}

/* A uniform number below n (n > 0; 0 when getrandom fails). */
static unsigned int random_below(unsigned int n)
{
	uint32_t v, limit = UINT32_MAX - UINT32_MAX % n;

	do {
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			return 0;
	} while (v >= limit);
	return v % n;
}

struct burner {
	struct ibv_pd *pd;
	struct ibv_cq *cq;
};

/* Skip a random number of QPNs: make and destroy that many QPs. */
static void spread(struct srdma_listener *l, struct burner *b)
{
	struct srdma_pool *p = &l->pool;
	struct ibv_qp_init_attr a = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1,
			 .max_recv_sge = 1 },
	};
	unsigned int n;

	if (!p->spread_bits)
		return;
	if (!b->pd && !(b->pd = ibv_alloc_pd(l->dev.ctx)))
		return;
	if (!b->cq && !(b->cq = ibv_create_cq(l->dev.ctx, 1, NULL, NULL, 0)))
		return;
	a.send_cq = a.recv_cq = b->cq;
	n = random_below(1u << p->spread_bits);
	for (unsigned int i = 0; i < n; i++) {
		struct ibv_qp *qp = ibv_create_qp(b->pd, &a);

		if (!qp)
			return;
		ibv_destroy_qp(qp);
		p->burnt++;
	}
}

static void *pool_thread(void *arg)
{
	struct srdma_listener *l = arg;
	struct srdma_pool *p = &l->pool;
	struct burner b = { 0 };

	/* Background work: the lowest priority, so that on a busy machine
	 * the setups it serves come first (they make their own meanwhile). */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		struct srdma_conn *c;
		struct timespec until;

		if (p->have == p->len) {
			pthread_cond_wait(&p->cond, &p->lock);
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		spread(l, &b);
		c = prepare(l);
		pthread_mutex_lock(&p->lock);
		if (c) {
			p->set[p->have++] = c;
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += POOL_RETRY_MS / 1000;
		until.tv_nsec += (POOL_RETRY_MS % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (!p->stop)
			pthread_cond_timedwait(&p->cond, &p->lock, &until);
	}
	pthread_mutex_unlock(&p->lock);
	if (b.cq)
		ibv_destroy_cq(b.cq);
	if (b.pd)
		ibv_dealloc_pd(b.pd);
	return NULL;
}

int srdma_pool_start(struct srdma_listener *l, unsigned int n, struct srdma_err *err)
{
	struct srdma_pool *p = &l->pool;
	pthread_condattr_t ca;
	int rc;

	if (!n)
		return 0;
	p->set = calloc(n, sizeof(*p->set));
	if (!p->set) {
		srdma_set_err(err, -ENOMEM, "listen", "out of memory");
		return -ENOMEM;
	}
	p->len = n;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	p->inited = true;
	rc = srdma_thread_start(&p->thread, pool_thread, l);
	if (rc) {
		srdma_set_err(err, rc, "listen", "start the QP pool's thread: %s", strerror(-rc));
		return rc;
	}
	p->running = true;
	return 0;
}

bool srdma_pool_take(struct srdma_listener *l, struct srdma_conn *c)
{
	struct srdma_pool *p = &l->pool;
	struct srdma_conn *set = NULL;

	if (!p->running)
		return false;
	pthread_mutex_lock(&p->lock);
	if (p->have) {
		/* Any one of them (QPN spread): the last moves into its place. */
		unsigned int i = p->spread_bits ? random_below(p->have) : p->have - 1;

		set = p->set[i];
		p->set[i] = p->set[--p->have];
		p->taken++;
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	if (!set)
		return false;
	move_verbs(c, set);
	free(set);
	return true;
}

unsigned long long srdma_pool_taken(struct srdma_listener *l)
{
	struct srdma_pool *p = &l->pool;
	unsigned long long n;

	if (!p->inited)
		return 0;
	pthread_mutex_lock(&p->lock);
	n = p->taken;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void srdma_pool_stop(struct srdma_listener *l)
{
	struct srdma_pool *p = &l->pool;

	if (!p->inited)
		return;
	if (p->running) {
		pthread_mutex_lock(&p->lock);
		p->stop = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->thread, NULL);
		p->running = false;
	}
	for (unsigned int i = 0; i < p->have; i++) {
		srdma_verbs_destroy(p->set[i]);
		free(p->set[i]);
	}
	free(p->set);
	p->set = NULL;
	p->have = p->len = 0;
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	p->inited = false;
}
