/*
 * The acceptor: admission control for a listener, driven by the caller's
 * event loop through one file descriptor.
 *
 * The caller watches l->epfd and calls srdma_listener_get_event(). That
 * call accepts waiting connections (a bounded number per call), refuses
 * them when the client cap is reached, evicts a silent setup or leaves new
 * connections in the backlog when max_handshakes are running (make_room),
 * starts each setup on a thread of its own,
 * and collects finished setups as events. Setup threads only run the
 * handshake and mark themselves done (under l->lock, then a write to evfd);
 * everything else happens on the caller's thread.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <netinet/in.h>
#include <linux/tcp.h>	/* tcpi_bytes_received: glibc's struct lacks it */

#include "srdma_internal.h"

/* Connections accepted per call: a storm of them does not hold the loop. */
#define ACCEPTS_PER_CALL 64

enum pending_state { PEND_FREE, PEND_RUNNING, PEND_DONE };

/* One setup in progress, run by its own thread. */
struct srdma_pending {
	enum pending_state state;	/* PEND_DONE set by the thread, under lock */
	bool evicted;
	bool spoke;			/* the client has sent a byte */
	bool stalled;			/* evicted as stalled, not silent */
	int64_t wait_since;		/* atomic: the thread blocks on its
					 * peer since (srdma_now_us), or 0 */
	unsigned int id;
	int fd;				/* the thread's; closed by it */
	int hold_fd;			/* dup(fd), ours: shutdown() evicts safely
					 * even once the thread has closed fd */
	int64_t started_us;
	pthread_t thread;
	struct srdma_listener *l;
	char peer_addr[64];
	/* Set by the thread before PEND_DONE. */
	int rc;
	struct srdma_conn *conn;
	struct srdma_err err;
};

/* A refusal in flight: TLS, then ERROR(server full), lingered. */
struct srdma_reject {
	bool busy;
	bool done;			/* atomic: set by the thread */
	int fd;
	int hold_fd;			/* dup(fd), for a safe shutdown() at stop */
	pthread_t thread;
	struct srdma_listener *l;
};

static void wake(struct srdma_listener *l)
{
	uint64_t one = 1;

	/* Cannot fail short of a counter at 2^64 - 1. */
	if (write(l->evfd, &one, sizeof(one)) < 0)
		return;
}

static void *setup_thread(void *arg)
{
	struct srdma_pending *p = arg;
	struct srdma_listener *l = p->l;

	srdma_peer_wait = &p->wait_since;
	p->rc = srdma_server_handshake(l, p->fd, &p->conn, &p->err);
	srdma_peer_wait = NULL;
	pthread_mutex_lock(&l->lock);
	p->state = PEND_DONE;
	pthread_mutex_unlock(&l->lock);
	wake(l);
	return NULL;
}

static void *reject_thread(void *arg)
{
	struct srdma_reject *r = arg;

	srdma_server_reject(r->l, r->fd, SRDMA_ERROR_SERVER_FULL, "server full");
	__atomic_store_n(&r->done, true, __ATOMIC_RELEASE);
	wake(r->l);
	return NULL;
}

static bool watch(struct srdma_listener *l, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

int srdma_acceptor_init(struct srdma_listener *l, const struct srdma_server_opts *o,
			struct srdma_err *err)
{
	l->max_clients = o->max_clients ? o->max_clients : SRDMA_DEFAULT_MAX_CLIENTS;
	l->max_handshakes = o->max_handshakes ? o->max_handshakes : SRDMA_DEFAULT_MAX_HANDSHAKES;
	l->silent_ms = o->silent_ms ? o->silent_ms : SRDMA_DEFAULT_SILENT_MS;
	l->stall_ms = o->stall_ms;	/* 0: stalled setups are not evicted */
	if (l->max_handshakes > 100000 || l->max_clients > 10000000) {
		srdma_set_err(err, -EINVAL, "options", "max_handshakes %u or max_clients %u too large",
			      l->max_handshakes, l->max_clients);
		return -EINVAL;
	}
	if (o->prepared < -1 || o->prepared > 1024) {
		srdma_set_err(err, -EINVAL, "options", "prepared %d out of range (-1..1024)",
			      o->prepared);
		return -EINVAL;
	}
	if (o->qpn_spread < -1 || o->qpn_spread > SRDMA_MAX_QPN_SPREAD) {
		srdma_set_err(err, -EINVAL, "options", "qpn_spread %d out of range (-1..%d)",
			      o->qpn_spread, SRDMA_MAX_QPN_SPREAD);
		return -EINVAL;
	}
	if (l->stall_ms < 0 || l->stall_ms > 3600000) {
		srdma_set_err(err, -EINVAL, "options", "stall_ms %d out of range (1..3600000)",
			      o->stall_ms);
		return -EINVAL;
	}
	if (l->silent_ms < 0 || l->silent_ms > 3600000) {
		srdma_set_err(err, -EINVAL, "options", "silent_ms %d out of range (1..3600000)",
			      o->silent_ms);
		return -EINVAL;
	}
	/* Evicted setups take a moment to end: room for as many again. */
	l->pend_len = 2 * l->max_handshakes;
	if (l->pend_len < l->max_handshakes + 8)
		l->pend_len = l->max_handshakes + 8;
	l->pend = calloc(l->pend_len, sizeof(*l->pend));
	l->rejects = calloc(SRDMA_MAX_REJECTS, sizeof(*l->rejects));
	if (!l->pend || !l->rejects) {
		srdma_set_err(err, -ENOMEM, "listen", "out of memory");
		return -ENOMEM;
	}
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	l->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (l->epfd < 0 || l->evfd < 0 || l->timerfd < 0 || !watch(l, l->fd) ||
	    !watch(l, l->evfd) || !watch(l, l->timerfd)) {
		int rc = -errno;

		srdma_set_err(err, rc, "listen", "event descriptors: %s", strerror(-rc));
		return rc;
	}
	l->watching = true;
	return 0;
}

int srdma_listener_fd(const struct srdma_listener *l)
{
	return l->epfd;
}

void srdma_listener_stats(const struct srdma_listener *l, struct srdma_listener_stats *st,
			  size_t size)
{
	struct srdma_listener *ml = (struct srdma_listener *)l;	/* for the lock */
	struct srdma_listener_stats s = l->stats;

	s.clients = __atomic_load_n(&l->clients, __ATOMIC_ACQUIRE);
	s.prepared_used = srdma_pool_taken(ml);
	s.handshakes = 0;
	pthread_mutex_lock(&ml->lock);
	for (unsigned int i = 0; l->pend && i < l->pend_len; i++)
		if (l->pend[i].state == PEND_RUNNING && !l->pend[i].evicted)
			s.handshakes++;
	pthread_mutex_unlock(&ml->lock);
	memcpy(st, &s, size < sizeof(s) ? size : sizeof(s));
}

static struct srdma_event *new_event(struct srdma_listener *l, enum srdma_event_type type,
				     unsigned int id, const char *addr)
{
	struct srdma_event *ev = &l->ev;

	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->id = id;
	snprintf(ev->peer_addr, sizeof(ev->peer_addr), "%s", addr ? addr : "");
	return ev;
}

/* --- when the listening socket is watched --- */

/*
 * The listening socket is in epfd unless the listener rests: after accept()
 * ran out of descriptors (or memory), when the failed accept leaves the
 * connection queued and watching the socket would spin; or while it waits
 * for room (room_wait): every setup record is taken (evicted setups still
 * ending), or max_handshakes setups run and none may be evicted yet. New
 * connections then wait in the kernel's backlog instead of being dropped
 * or cutting off a client that is setting up; a finished setup (evfd) or
 * the moment a silent one may go (timerfd) ends the wait.
 */
static void update_watch(struct srdma_listener *l)
{
	bool want = !l->paused && !l->room_wait;

	if (want == l->watching)
		return;
	if (want) {
		if (!watch(l, l->fd)) {
			/* Out of memory for epoll: rest and try again. */
			struct itimerspec t = { .it_value = { .tv_nsec = SRDMA_LISTEN_PAUSE_MS * 1000000L } };

			l->paused = true;
			timerfd_settime(l->timerfd, 0, &t, NULL);
			return;
		}
	} else {
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->fd, NULL);
	}
	l->watching = want;
}

static void pause_listener(struct srdma_listener *l)
{
	struct itimerspec t = { .it_value = { .tv_sec = SRDMA_LISTEN_PAUSE_MS / 1000,
					      .tv_nsec = (SRDMA_LISTEN_PAUSE_MS % 1000) * 1000000L } };

	l->paused = true;
	timerfd_settime(l->timerfd, 0, &t, NULL);
	update_watch(l);
}

/* The timer ends a rest and a wait for room alike; accept_one() looks
 * again, and waits again if there still is none. */
static void resume_listener(struct srdma_listener *l)
{
	uint64_t n;

	if (read(l->timerfd, &n, sizeof(n)) != sizeof(n))
		return;
	l->paused = false;
	l->room_wait = false;
	update_watch(l);
}

static void wait_for_room(struct srdma_listener *l, int64_t ms)
{
	if (ms > 0) {
		struct itimerspec t = { .it_value = { .tv_sec = ms / 1000,
						      .tv_nsec = (ms % 1000) * 1000000L } };

		timerfd_settime(l->timerfd, 0, &t, NULL);
	}
	if (!l->room_wait)
		l->stats.waits++;
	l->room_wait = true;
	update_watch(l);
}

/* --- refusals --- */

static void reap_rejects(struct srdma_listener *l, bool all)
{
	for (int i = 0; i < SRDMA_MAX_REJECTS; i++) {
		struct srdma_reject *r = &l->rejects[i];

		if (!r->busy || (!all && !__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)))
			continue;
		pthread_join(r->thread, NULL);
		close(r->hold_fd);
		r->busy = false;
	}
}

/* Tell the client "server full" over TLS, on a thread (the handshake can
 * take as long as handshake_ms); with every refusal slot busy, just close. */
static void refuse(struct srdma_listener *l, int fd, struct srdma_event *ev)
{
	l->stats.refused++;
	for (int i = 0; i < SRDMA_MAX_REJECTS; i++) {
		struct srdma_reject *r = &l->rejects[i];

		if (r->busy)
			continue;
		r->done = false;
		r->fd = fd;
		r->l = l;
		r->hold_fd = dup(fd);
		if (r->hold_fd >= 0 && srdma_thread_start(&r->thread, reject_thread, r) == 0) {
			r->busy = true;
			srdma_set_err(&ev->err, -EBUSY, "admission", "server full (%u clients)",
				      l->max_clients);
			return;
		}
		if (r->hold_fd >= 0)
			close(r->hold_fd);
		break;
	}
	srdma_set_err(&ev->err, -EBUSY, "admission",
		      "server full (%u clients); closed without TLS: %d refusals in flight",
		      l->max_clients, SRDMA_MAX_REJECTS);
	close(fd);
}

/* --- setups --- */

/*
 * How long the setup's client has been silent, in ms, counted from its TCP
 * handshake (a wait in the backlog included); -1 once it has sent a byte.
 * The kernel's figures (TCP_INFO), so a client whose first flight waits
 * unread for a busy setup thread has spoken all the same.
 */
static int64_t silent_for(struct srdma_pending *p, int64_t now_us)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int64_t since_accept = (now_us - p->started_us) / 1000;

	if (p->spoke)
		return -1;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(p->hold_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	    len >= offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received)) {
		p->spoke = ti.tcpi_bytes_received > 0;
		/* No data ever: last_data_recv counts from the handshake. */
		if (!p->spoke)
			return ti.tcpi_last_data_recv > since_accept ? ti.tcpi_last_data_recv
								     : since_accept;
	} else {
		/* A kernel before 4.1: bytes still queued, at least. */
		char c;

		p->spoke = recv(p->hold_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
	}
	return p->spoke ? -1 : since_accept;
}

/*
 * Whether p may be evicted to make room (*left <= 0), or will be in *left
 * ms; false when it is making progress. Two kinds may go: a setup whose
 * client never sent a byte, once silent for silent_ms (rank 2: these go
 * first); and, with stall_ms set, one whose thread has been blocked on its
 * client that long, a peer that spoke and then stopped (rank 1). *age is
 * how long, to pick the longest.
 */
static bool evict_candidate(struct srdma_listener *l, struct srdma_pending *p, int64_t now,
			    int *rank, int64_t *age, int64_t *left)
{
	int64_t silent = silent_for(p, now), since;

	if (silent >= 0) {
		*rank = 2;
		*age = silent;
		*left = l->silent_ms - silent;
		return true;
	}
	since = __atomic_load_n(&p->wait_since, __ATOMIC_RELAXED);
	if (!since || !l->stall_ms)
		return false;	/* working, or its client waits on us */
	*rank = 1;
	*age = (now - since) / 1000;
	*left = l->stall_ms - *age;
	return true;
}

/*
 * Room for one more setup? 0: yes (a silent or stalled setup may have been
 * evicted to make it); > 0: not yet: look again in that many ms; -1: not
 * until a setup ends.
 */
static int64_t make_room(struct srdma_listener *l)
{
	struct srdma_pending *victim = NULL;
	int64_t now = srdma_now_us(), soonest = -1, longest = 0;
	struct pollfd waiting = { .fd = l->fd, .events = POLLIN };
	unsigned int live = 0;
	int best = 0;

	pthread_mutex_lock(&l->lock);
	for (unsigned int i = 0; i < l->pend_len; i++)
		if (l->pend[i].state == PEND_RUNNING && !l->pend[i].evicted)
			live++;
	/* Room, or nobody in the accept queue to make it for. */
	if (live < l->max_handshakes || poll(&waiting, 1, 0) != 1) {
		pthread_mutex_unlock(&l->lock);
		return 0;
	}
	for (unsigned int i = 0; i < l->pend_len; i++) {
		struct srdma_pending *p = &l->pend[i];
		int64_t left, age;
		int rank;

		if (p->state != PEND_RUNNING || p->evicted ||
		    !evict_candidate(l, p, now, &rank, &age, &left))
			continue;
		if (left > 0) {
			if (soonest < 0 || left < soonest)
				soonest = left;
			continue;
		}
		/* Silent before stalled; then the longest; ties (the kernel
		 * counts in jiffies): the first accepted. */
		if (!victim || rank > best || (rank == best && (age > longest ||
		    (age == longest && p->started_us < victim->started_us)))) {
			victim = p;
			best = rank;
			longest = age;
		}
	}
	if (victim) {
		victim->evicted = true;
		victim->stalled = best == 1;
		shutdown(victim->hold_fd, SHUT_RDWR);
		l->stats.evicted++;
	}
	pthread_mutex_unlock(&l->lock);
	if (victim)
		return 0;
	/* Every setup is making progress: look again when one could have
	 * stalled for long enough (a finished setup ends the wait sooner). */
	return soonest >= 0 ? soonest + 1 : l->stall_ms ? l->stall_ms : -1;
}

static struct srdma_pending *free_pending(struct srdma_listener *l)
{
	for (unsigned int i = 0; i < l->pend_len; i++)
		if (l->pend[i].state == PEND_FREE)
			return &l->pend[i];
	return NULL;
}

/* Accept one connection. Returns 1 with an event to report, 0 when the
 * connection went to a setup thread, -EAGAIN when none is waiting (or the
 * listener rests). */
static int accept_one(struct srdma_listener *l, struct srdma_event **out)
{
	struct srdma_event *ev;
	struct srdma_pending *p;
	struct srdma_err err;
	char addr[64] = "";
	unsigned int id;
	int fd, rc;

	if (l->paused || l->room_wait)
		return -EAGAIN;
	if (!free_pending(l)) {
		wait_for_room(l, 0);
		return -EAGAIN;
	}
	/* Full of setups: make room before taking one more (a refusal needs
	 * none, but which it is shows only after accept). */
	if (__atomic_load_n(&l->clients, __ATOMIC_ACQUIRE) < l->max_clients) {
		int64_t wait_ms = make_room(l);

		if (wait_ms) {
			wait_for_room(l, wait_ms);
			return -EAGAIN;
		}
	}
	rc = srdma_accept_fd(l, &fd, addr, sizeof(addr), &err);
	if (rc == -EAGAIN)
		return rc;
	if (rc) {
		ev = new_event(l, SRDMA_EVENT_ACCEPT_ERROR, 0, NULL);
		ev->err = err;
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
			pause_listener(l);
			snprintf(ev->err.msg, sizeof(ev->err.msg),
				 "%s; not accepting for %d ms", strerror(-rc), SRDMA_LISTEN_PAUSE_MS);
		}
		*out = ev;
		return 1;
	}
	l->stats.accepted++;
	id = ++l->next_id;
	if (__atomic_load_n(&l->clients, __ATOMIC_ACQUIRE) >= l->max_clients) {
		ev = new_event(l, SRDMA_EVENT_REFUSED, id, addr);
		refuse(l, fd, ev);
		*out = ev;
		return 1;
	}
	p = free_pending(l);	/* there was one before the accept */
	memset(p, 0, sizeof(*p));
	p->id = id;
	p->l = l;
	p->fd = fd;
	p->hold_fd = dup(fd);
	p->started_us = srdma_now_us();
	snprintf(p->peer_addr, sizeof(p->peer_addr), "%s", addr);
	p->state = PEND_RUNNING;
	rc = p->hold_fd < 0 ? -errno : srdma_thread_start(&p->thread, setup_thread, p);
	if (rc) {
		ev = new_event(l, SRDMA_EVENT_FAILED, id, addr);
		srdma_set_err(&ev->err, rc, "start setup thread", "%s", strerror(-rc));
		l->stats.failed++;
		close(fd);
		if (p->hold_fd >= 0)
			close(p->hold_fd);
		p->state = PEND_FREE;
		*out = ev;
		return 1;
	}
	return 0;
}

static struct srdma_pending *find_done(struct srdma_listener *l)
{
	struct srdma_pending *done = NULL;

	pthread_mutex_lock(&l->lock);
	for (unsigned int i = 0; i < l->pend_len && !done; i++)
		if (l->pend[i].state == PEND_DONE)
			done = &l->pend[i];
	pthread_mutex_unlock(&l->lock);
	return done;
}

/* One finished setup, as an event; NULL when none has finished. */
static struct srdma_event *reap_one(struct srdma_listener *l)
{
	struct srdma_pending *p = find_done(l);
	struct srdma_event *ev;
	uint64_t n;

	if (!p) {
		/* Clear the wake-up, then look again: a thread that finished
		 * after the first look has either been found now or writes
		 * evfd after this read. */
		if (read(l->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
			return NULL;
		p = find_done(l);
		if (!p)
			return NULL;
		wake(l);	/* others may be done too: come back */
	}
	pthread_join(p->thread, NULL);
	close(p->hold_fd);
	p->state = PEND_FREE;
	if (l->room_wait) {
		l->room_wait = false;
		update_watch(l);
	}
	if (!p->rc && p->evicted) {
		/* Finished as it was evicted: its socket is shut, so it is
		 * dead already; it is not handed over. */
		srdma_conn_close(p->conn, 0, NULL);
		p->rc = -ECANCELED;
		srdma_set_err(&p->err, -ECANCELED, "admission", "finished as it was evicted");
	}
	if (p->rc) {
		ev = new_event(l, SRDMA_EVENT_FAILED, p->id, p->peer_addr);
		ev->err = p->err;
		if (p->evicted) {
			char why[sizeof(ev->err.msg)];

			snprintf(why, sizeof(why), "%s", ev->err.msg);
			ev->err.code = -ECANCELED;
			snprintf(ev->err.msg, sizeof(ev->err.msg),
				 "evicted, %s for %d ms (%u setups in progress, "
				 "max_handshakes): %.150s", p->stalled ? "stalled" : "silent",
				 p->stalled ? l->stall_ms : l->silent_ms, l->max_handshakes, why);
		}
		l->stats.failed++;
		return ev;
	}
	/* Setups run beside the clients: more may finish than there is room for. */
	if (__atomic_load_n(&l->clients, __ATOMIC_ACQUIRE) >= l->max_clients) {
		ev = new_event(l, SRDMA_EVENT_REFUSED, p->id, p->peer_addr);
		srdma_set_err(&ev->err, -EBUSY, "admission",
			      "server full (%u clients), refused after setup", l->max_clients);
		srdma_conn_close(p->conn, SRDMA_ERROR_SERVER_FULL, "server full");
		l->stats.refused++;
		return ev;
	}
	ev = new_event(l, SRDMA_EVENT_CONNECTED, p->id, p->peer_addr);
	ev->conn = p->conn;
	p->conn->counted = true;
	if (p->conn->shape.sh)
		srdma_shared_handover(p->conn);
	__atomic_add_fetch(&l->clients, 1, __ATOMIC_ACQ_REL);
	l->stats.connected++;
	return ev;
}

int srdma_listener_get_event(struct srdma_listener *l, const struct srdma_event **out)
{
	struct srdma_event *ev;

	*out = NULL;
	resume_listener(l);
	ev = reap_one(l);
	if (ev) {
		*out = ev;
		return 1;
	}
	reap_rejects(l, false);
	for (int i = 0; i < ACCEPTS_PER_CALL; i++) {
		int rc = accept_one(l, &ev);

		if (rc == 1) {
			*out = ev;
			return 1;
		}
		if (rc < 0)
			break;
	}
	return 0;
}

void srdma_acceptor_stop(struct srdma_listener *l)
{
	if (!l->pend || !l->rejects)
		goto fds;
	/* Setups in flight fail fast once their sockets are shut. */
	pthread_mutex_lock(&l->lock);
	for (unsigned int i = 0; i < l->pend_len; i++)
		if (l->pend[i].state == PEND_RUNNING)
			shutdown(l->pend[i].hold_fd, SHUT_RDWR);
	pthread_mutex_unlock(&l->lock);
	for (unsigned int i = 0; i < l->pend_len; i++) {
		struct srdma_pending *p = &l->pend[i];
		bool started;

		pthread_mutex_lock(&l->lock);
		started = p->state != PEND_FREE;
		pthread_mutex_unlock(&l->lock);
		if (!started)
			continue;
		pthread_join(p->thread, NULL);
		close(p->hold_fd);
		if (!p->rc)
			srdma_conn_close(p->conn, SRDMA_ERROR_SHUTDOWN, "server shutting down");
		p->state = PEND_FREE;
	}
	for (int i = 0; i < SRDMA_MAX_REJECTS; i++)
		if (l->rejects[i].busy)
			shutdown(l->rejects[i].hold_fd, SHUT_RDWR);
	reap_rejects(l, true);
fds:
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->evfd >= 0)
		close(l->evfd);
	if (l->timerfd >= 0)
		close(l->timerfd);
	l->epfd = l->evfd = l->timerfd = -1;
	free(l->pend);
	free(l->rejects);
	l->pend = NULL;
	l->rejects = NULL;
}
