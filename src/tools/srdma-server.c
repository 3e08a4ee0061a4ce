/*
 * srdma-server: serves secure RDMA connections to srdma-client.
 *
 * One thread runs an epoll loop over the listening socket, a signalfd, and
 * each connected client's TLS socket and completion channel: an idle server
 * sleeps in epoll_wait. The blocking part of a new connection (TLS, parameter
 * exchange, QP setup) runs in a short-lived thread per connection, capped.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <srdma.h>
#include "common.h"

static const char *prog = "srdma-server";
static int verbose;

enum slot_state { SLOT_FREE, SLOT_ACTIVE };

/* A connected client. */
struct slot {
	enum slot_state state;
	bool queued;			/* in the ready ring (kept across reuse) */
	unsigned int id;		/* connection number, for the log */
	struct srdma_conn *conn;
	bool send_busy[SRDMA_SLOTS];
	unsigned long echoes, writes;
	unsigned long long bytes;
};

/*
 * Rate-limited log lines, as sshd does for MaxStartups: a flood of
 * connections must not become a flood of log lines. Each kind of line gets
 * LOG_BURST a second; the rest are counted and the count logged once.
 */
#define LOG_BURST 10
struct ratelimit {
	const char *what;
	double window;			/* now_us() when the second began */
	unsigned int lines, suppressed;
};

/*
 * A connection still in its handshake (TLS, parameters, QP setup), run by a
 * thread of its own. These do not take client slots, so connections that
 * never finish cannot keep real clients out; at most max_handshakes are in
 * progress, and one more evicts the oldest.
 */
enum pending_state { PEND_FREE, PEND_RUNNING, PEND_DONE };

struct pending {
	enum pending_state state;	/* PEND_DONE is set by the thread, under lock */
	bool evicted;
	unsigned int id;
	int fd;				/* the thread's; closed by it */
	int hold_fd;			/* dup(fd), ours: shutdown() to evict safely
					 * even once the thread has closed fd */
	double started;			/* now_us() */
	pthread_t thread;
	struct srdma_conn *conn;
	struct srdma_err err;
	int rc;
};

/* Rejections ("server full") also need a TLS handshake: a few at a time. */
#define MAX_REJECTS 8
struct reject {
	bool busy;
	bool done;
	int fd;
	int hold_fd;	/* dup(fd), for a safe shutdown() at exit */
	pthread_t thread;
};

struct server {
	struct srdma_listener *l;
	int epfd, sigfd, evfd;
	struct slot *slots;
	unsigned int max_clients, active, next_id;
	/* Clients whose CQs may hold more than one batch: served round-robin,
	 * a batch each per turn of the loop (a ring of slot indices). */
	unsigned int *ready;
	unsigned int ready_head, ready_len;
	/* accept() out of descriptors: the listener rests until then. */
	bool listen_paused;
	double listen_resume;		/* now_us() */
	int tick_ms;			/* liveness timers looked at this often */
	double next_tick;
	struct ratelimit rl_accept, rl_refused, rl_evicted, rl_failed, rl_dropped;
	struct pending *pend;
	unsigned int max_handshakes;	/* in progress, not counting evicted ones */
	unsigned int pend_len;		/* room: evicted threads take a while to end */
	struct reject rejects[MAX_REJECTS];
	pthread_mutex_t lock;		/* pending state set by handshake threads */
};

/* epoll data: pointer-sized tags (kind in the low bits of a slot index). */
enum { EV_LISTEN = 1, EV_SIGNAL, EV_HANDSHAKE, EV_CTRL, EV_CQ };
#define EV_TAG(kind, idx) (((uint64_t)(idx) << 8) | (kind))

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	char ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &now);
	localtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
	printf("%s.%03ld ", ts, now.tv_nsec / 1000000);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* Once its second is over: say what it suppressed, start the next. */
static void rl_roll(struct ratelimit *rl, double now)
{
	if (now - rl->window < 1e6)
		return;
	if (rl->suppressed)
		logf_("(%u more \"%s\" lines not logged)", rl->suppressed, rl->what);
	rl->window = now;
	rl->lines = rl->suppressed = 0;
}

/* Log a line of this kind unless its budget for this second is spent. */
static bool rl_allow(struct ratelimit *rl)
{
	rl_roll(rl, now_us());
	if (rl->lines < LOG_BURST) {
		rl->lines++;
		return true;
	}
	rl->suppressed++;
	return false;
}

#define logf_limited(rl, ...) do {					\
	if (rl_allow(rl))						\
		logf_(__VA_ARGS__);					\
} while (0)

static void usage(FILE *f)
{
	fprintf(f,
"Usage: srdma-server --cert FILE --key FILE [OPTIONS]\n"
"\n"
"Serve secure RDMA reliable connections. Each client meets the server over\n"
"TLS (1.2 minimum, 1.3 preferred), both exchange random 24-bit PSNs and queue\n"
"pair parameters only over TLS, then each side brings its own RC QP up with\n"
"raw verbs and checks it with ibv_query_qp. Every client gets its own PD,\n"
"CQs, QP and memory. The server echoes each SEND back and accepts RDMA WRITEs\n"
"into the client's window, acknowledging each with a SHA-256 of what landed.\n"
"\n"
"Options:\n"
"  -p, --port PORT        TCP port for TLS (default 4433)\n"
"  -b, --bind ADDR        address to listen on (default: all, IPv6 and IPv4)\n"
"  -c, --cert FILE        server certificate chain, PEM (required)\n"
"  -k, --key FILE         server private key, PEM (required)\n"
"  -C, --client-ca FILE   require client certificates issued by this CA\n"
"  -m, --max-clients N    clients served at once, 1..100000 (default 10); one\n"
"                         more is told \"server full\" over TLS and closed\n"
"  -H, --max-handshakes N connections in their handshake at once, 1..10000\n"
"                         (default 64); these take no client slot, and one\n"
"                         more evicts the oldest, so connections that never\n"
"                         finish cannot keep real clients out\n"
"  -d, --dev NAME         RDMA device (default: the first)\n"
"  -i, --ib-port N        device port (default 1)\n"
"  -g, --gid-index N      GID index (default: a RoCE v2 GID with an IPv4\n"
"                         address, else a RoCE v2 GID, else 0)\n"
"  -s, --buf-size BYTES   message slot and write window size, 64..1073741824\n"
"                         (default 4096)\n"
"  -t, --handshake-timeout MS  deadline for a client's whole setup\n"
"                         (default 10000)\n"
"  -T, --peer-timeout MS  a client silent this long, a liveness probe\n"
"                         unanswered, is disconnected and its slot freed: a\n"
"                         hung process or a dead host (default 180000;\n"
"                         0: never)\n"
"  -r, --crl FILE         with --client-ca: refuse client certificates revoked\n"
"                         in these PEM CRLs (each CA of the chain needs its\n"
"                         CRL here)\n"
"  -P, --psn-mode MODE    exchange (default): random PSNs sent inside TLS;\n"
"                         exporter: both PSNs derived from the TLS session,\n"
"                         none sent at all (both sides must use the same)\n"
"  -R, --no-resumption    issue no TLS session tickets: every client does a\n"
"                         full handshake (default: one TLS 1.3 ticket per\n"
"                         handshake, sealed with a key that lives only in\n"
"                         this process and is replaced every hour; TLS 1.2\n"
"                         clients get none)\n"
"  -v, --verbose          also log PSNs, rkeys and window addresses (secrets),\n"
"                         and what clients write (escaped)\n"
"  -V, --version          print the version\n"
"  -h, --help             show this help\n"
"\n"
"SIGINT or SIGTERM: says BYE to every client, frees everything, exits 0.\n"
"SIGUSR1: logs a stats line: clients, and the port's PSN-sequence counters\n"
"(out-of-sequence and duplicate requests: injection attempts show there).\n"
"A client whose QP fails (error completion) is disconnected with the reason.\n"
"Busy clients are served in turns, a batch of completions each, so none can\n"
"starve the others, new connections or signals. Repeated log lines (refusals,\n"
"evictions, failed setups, accept errors) are limited to 10 a second each.\n"
"Exit status: 0 after a signal, 1 when setup fails (the message says which\n"
"step and why), 2 on bad usage.\n");
}

static void close_slot(struct server *s, struct slot *sl, uint16_t code,
		       const char *reason)
{
	int ctrl = srdma_conn_ctrl_fd(sl->conn);
	struct ibv_comp_channel *ch = srdma_conn_channel(sl->conn);

	epoll_ctl(s->epfd, EPOLL_CTL_DEL, ctrl, NULL);
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, ch->fd, NULL);
	srdma_conn_close(sl->conn, code, reason);
	sl->conn = NULL;
	sl->state = SLOT_FREE;
	s->active--;
	logf_("client %u: closed: %s (%lu echoes, %lu writes, %llu bytes)", sl->id,
	      reason, sl->echoes, sl->writes, sl->bytes);
}

/* --- device counters --- */

/*
 * Port counters that show packets outside the expected PSN window: an
 * injection attempt, or a very lossy fabric. rxe names them
 * out_of_seq_request / duplicate_request / rcvd_seq_err; mlx5 has
 * out_of_sequence / packet_seq_err / duplicate_request. Whatever exists
 * under the port's hw_counters is reported.
 */
static const char *const seq_counters[] = {
	"out_of_seq_request", "duplicate_request", "rcvd_seq_err",
	"out_of_sequence", "packet_seq_err",
};
#define N_SEQ_COUNTERS (sizeof(seq_counters) / sizeof(seq_counters[0]))

/* -1 where the device has no such counter. */
static void read_counters(const struct srdma_listener *l, long long v[N_SEQ_COUNTERS])
{
	for (size_t i = 0; i < N_SEQ_COUNTERS; i++) {
		char path[256];
		FILE *f;

		v[i] = -1;
		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%d/hw_counters/%s",
			 srdma_listener_device(l), srdma_listener_ib_port(l), seq_counters[i]);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fscanf(f, "%lld", &v[i]) != 1)
			v[i] = -1;
		fclose(f);
	}
}

static long long counters_at_start[N_SEQ_COUNTERS];

static void log_stats(struct server *s, const char *why)
{
	long long now[N_SEQ_COUNTERS];
	char line[512];
	size_t len = 0;

	read_counters(s->l, now);
	for (size_t i = 0; i < N_SEQ_COUNTERS && len < sizeof(line); i++)
		if (now[i] >= 0)
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %s=%lld (+%lld)",
						seq_counters[i], now[i],
						now[i] - (counters_at_start[i] > 0 ? counters_at_start[i] : 0));
	logf_("stats (%s): %u clients, %u connections so far; %s port %d counters:%s", why,
	      s->active, s->next_id, srdma_listener_device(s->l), srdma_listener_ib_port(s->l),
	      len ? line : " none readable");
}

/* --- new connections --- */

static void *handshake_thread(void *arg)
{
	struct server *s = ((void **)arg)[0];
	struct pending *p = ((void **)arg)[1];
	uint64_t one = 1;

	free(arg);
	p->rc = srdma_server_handshake(s->l, p->fd, &p->conn, &p->err);
	pthread_mutex_lock(&s->lock);
	p->state = PEND_DONE;
	pthread_mutex_unlock(&s->lock);
	if (write(s->evfd, &one, sizeof(one)) < 0)
		perror("srdma-server: eventfd");
	return NULL;
}

static void *reject_thread(void *arg)
{
	struct server *s = ((void **)arg)[0];
	struct reject *r = ((void **)arg)[1];
	uint64_t one = 1;

	free(arg);
	srdma_server_reject(s->l, r->fd, SRDMA_ERROR_SERVER_FULL, "server full");
	__atomic_store_n(&r->done, true, __ATOMIC_RELEASE);
	if (write(s->evfd, &one, sizeof(one)) < 0)
		perror("srdma-server: eventfd");
	return NULL;
}

static bool start_thread(pthread_t *t, void *(*fn)(void *), void *a, void *b)
{
	void **arg = malloc(2 * sizeof(void *));

	if (!arg)
		return false;
	arg[0] = a;
	arg[1] = b;
	if (pthread_create(t, NULL, fn, arg)) {
		free(arg);
		return false;
	}
	return true;
}

static void reap_rejects(struct server *s, bool all)
{
	for (int i = 0; i < MAX_REJECTS; i++) {
		struct reject *r = &s->rejects[i];

		if (!r->busy)
			continue;
		if (!all && !__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
			continue;
		pthread_join(r->thread, NULL);
		close(r->hold_fd);
		r->busy = false;
	}
}

static void reject_full(struct server *s, int fd)
{
	for (int i = 0; i < MAX_REJECTS; i++) {
		struct reject *r = &s->rejects[i];

		if (r->busy)
			continue;
		r->done = false;
		r->fd = fd;
		r->hold_fd = dup(fd);
		if (r->hold_fd >= 0 && start_thread(&r->thread, reject_thread, s, r)) {
			r->busy = true;
			logf_limited(&s->rl_refused, "refused a connection: server full (%u clients)",
				     s->max_clients);
			return;
		}
		if (r->hold_fd >= 0)
			close(r->hold_fd);
		break;
	}
	/* Too many refusals in flight: just close. */
	logf_limited(&s->rl_refused, "refused a connection: server full, closed without TLS");
	close(fd);
}

/* Make room for one more handshake: evict the oldest when at the cap. */
static void evict_if_full(struct server *s)
{
	struct pending *oldest = NULL;
	unsigned int live = 0;

	pthread_mutex_lock(&s->lock);
	for (unsigned int i = 0; i < s->pend_len; i++) {
		struct pending *p = &s->pend[i];

		if (p->state != PEND_RUNNING || p->evicted)
			continue;
		live++;
		if (!oldest || p->started < oldest->started)
			oldest = p;
	}
	if (live >= s->max_handshakes && oldest) {
		oldest->evicted = true;
		shutdown(oldest->hold_fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&s->lock);
	if (live >= s->max_handshakes && oldest)
		logf_limited(&s->rl_evicted,
			     "client %u: handshake evicted: %u in progress (--max-handshakes)",
			     oldest->id, live);
}

static struct pending *free_pending(struct server *s)
{
	for (unsigned int i = 0; i < s->pend_len; i++)
		if (s->pend[i].state == PEND_FREE)
			return &s->pend[i];
	return NULL;
}

/* Connections taken per wake-up: a storm of them does not keep the loop. */
#define ACCEPTS_PER_WAKE 64
/* How long the listener rests when accept() has no descriptor to give. */
#define LISTEN_PAUSE_MS 250

static bool watch(struct server *s, int fd, uint64_t tag);

/*
 * Out of descriptors (or memory), accept() fails and leaves the connection
 * queued, so the listener stays readable: watching it would spin. Rest it
 * a while instead; the queue waits in the kernel meanwhile.
 */
static void pause_listener(struct server *s, const char *why)
{
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, srdma_listener_fd(s->l), NULL);
	s->listen_paused = true;
	s->listen_resume = now_us() + LISTEN_PAUSE_MS * 1000.0;
	logf_limited(&s->rl_accept, "accept failed: %s; not accepting for %d ms", why,
		     LISTEN_PAUSE_MS);
}

static void on_listen(struct server *s)
{
	for (int taken = 0; taken < ACCEPTS_PER_WAKE; taken++) {
		struct srdma_err err;
		struct pending *p;
		int fd, rc = srdma_accept_fd(s->l, &fd, &err);

		if (rc == -EAGAIN)
			return;
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
			pause_listener(s, err.msg);
			return;
		}
		if (rc) {
			/* A connection that failed on its way in (ECONNABORTED,
			 * ...): its own problem; take the next. */
			logf_limited(&s->rl_accept, "accept failed: %s", err.msg);
			continue;
		}
		if (s->active >= s->max_clients) {
			reject_full(s, fd);
			continue;
		}
		evict_if_full(s);
		p = free_pending(s);
		if (!p) {
			logf_limited(&s->rl_dropped,
				     "dropped a connection: too many handshakes ending at once");
			close(fd);
			continue;
		}
		memset(p, 0, sizeof(*p));
		p->id = ++s->next_id;
		p->fd = fd;
		p->hold_fd = dup(fd);
		p->started = now_us();
		p->state = PEND_RUNNING;
		if (p->hold_fd < 0 || !start_thread(&p->thread, handshake_thread, s, p)) {
			logf_("client %u: cannot start its handshake: %s", p->id, strerror(errno));
			close(fd);
			if (p->hold_fd >= 0)
				close(p->hold_fd);
			p->state = PEND_FREE;
		}
	}
}

static bool watch(struct server *s, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

static void activate(struct server *s, struct slot *sl, unsigned int idx)
{
	const struct srdma_conn_info *i = srdma_conn_info(sl->conn);
	struct ibv_comp_channel *ch = srdma_conn_channel(sl->conn);

	sl->state = SLOT_ACTIVE;
	s->active++;
	if (!watch(s, srdma_conn_ctrl_fd(sl->conn), EV_TAG(EV_CTRL, idx)) ||
	    !watch(s, ch->fd, EV_TAG(EV_CQ, idx))) {
		close_slot(s, sl, SRDMA_ERROR_INTERNAL, "internal error");
		return;
	}
	logf_("client %u: accepted from %s, %s %s%s%s", sl->id, i->peer_addr,
	      i->tls_version, i->tls_cipher, i->peer_cert_subject[0] ? ", cert " : "",
	      i->peer_cert_subject);
	logf_("client %u: QP up on %s: QPN 0x%06x <-> 0x%06x, MTU %d, PSNs (%s) set and verified, peer bound",
	      sl->id, i->dev_name, i->local_qpn, i->remote_qpn,
	      128 << i->path_mtu, i->psn_mode == SRDMA_PSN_EXPORTER ? "exporter" : "exchange");
	if (verbose)
		logf_("client %u: PSN local 0x%06x remote 0x%06x; window addr 0x%llx rkey 0x%x len %zu",
		      sl->id, i->local_psn, i->remote_psn,
		      (unsigned long long)(uintptr_t)srdma_conn_window(sl->conn)->addr,
		      srdma_conn_window(sl->conn)->rkey, srdma_conn_window(sl->conn)->len);
}

/* A client whose CQs need serving: at the back of the ring, once. */
static void enqueue(struct server *s, unsigned int idx)
{
	if (s->slots[idx].queued)
		return;
	s->slots[idx].queued = true;
	s->ready[(s->ready_head + s->ready_len++) % s->max_clients] = idx;
}

static struct slot *free_slot(struct server *s, unsigned int *idx)
{
	for (unsigned int i = 0; i < s->max_clients; i++)
		if (s->slots[i].state == SLOT_FREE) {
			*idx = i;
			return &s->slots[i];
		}
	return NULL;
}

static void on_handshakes(struct server *s)
{
	uint64_t n;

	if (read(s->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		perror("srdma-server: eventfd");
	reap_rejects(s, false);
	for (unsigned int i = 0; i < s->pend_len; i++) {
		struct pending *p = &s->pend[i];
		struct slot *sl;
		unsigned int idx;
		bool done, queued;

		pthread_mutex_lock(&s->lock);
		done = p->state == PEND_DONE;
		pthread_mutex_unlock(&s->lock);
		if (!done)
			continue;
		pthread_join(p->thread, NULL);
		close(p->hold_fd);
		p->state = PEND_FREE;
		if (p->rc) {
			logf_limited(&s->rl_failed, "client %u: setup failed at %s: %s%s", p->id,
				     p->err.step, p->err.msg, p->evicted ? " (evicted)" : "");
			continue;
		}
		/* Handshakes run beside the clients: more may finish than
		 * there is room for. */
		sl = s->active < s->max_clients ? free_slot(s, &idx) : NULL;
		if (!sl) {
			logf_("client %u: refused after setup: server full (%u clients)", p->id,
			      s->max_clients);
			srdma_conn_close(p->conn, SRDMA_ERROR_SERVER_FULL, "server full");
			continue;
		}
		queued = sl->queued;	/* its old entry may still be in the ring */
		memset(sl, 0, sizeof(*sl));
		sl->queued = queued;
		sl->id = p->id;
		sl->conn = p->conn;
		activate(s, sl, idx);
		/* A SEND may have landed before we watched the channel. */
		if (sl->state == SLOT_ACTIVE)
			enqueue(s, idx);
	}
}

/* --- traffic --- */

static int post_send(struct srdma_conn *c, unsigned int slot, uint32_t len,
		     uint32_t imm)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = {
		.addr = (uintptr_t)b->addr + (uint64_t)slot * srdma_conn_buf_size(c),
		.length = len,
		.lkey = b->lkey,
	};
	struct ibv_send_wr wr = {
		.wr_id = slot,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = IBV_WR_SEND_WITH_IMM,
		.send_flags = IBV_SEND_SIGNALED,
		.imm_data = htonl(imm),
	}, *bad;

	return ibv_post_send(srdma_conn_qp(c), &wr, &bad);
}

/* A receive completed in slot: echo it, or acknowledge a write. */
static int on_recv(struct slot *sl, const struct ibv_wc *wc)
{
	struct srdma_conn *c = sl->conn;
	size_t bs = srdma_conn_buf_size(c);
	unsigned int slot = (unsigned int)wc->wr_id;
	unsigned char *out = (unsigned char *)srdma_conn_send_buf(c)->addr + slot * bs;
	const unsigned char *in = (unsigned char *)srdma_conn_recv_buf(c)->addr + slot * bs;

	if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
		const struct srdma_buf *w = srdma_conn_window(c);
		uint32_t len = ntohl(wc->imm_data);
		uint32_t be;

		if (len > w->len) {
			logf_("client %u: write notification of %u bytes exceeds the %zu-byte window",
			      sl->id, len, w->len);
			return -1;
		}
		be = htonl(len);
		memcpy(out, &be, 4);
		if (sha256(w->addr, len, out + 4))
			return -1;
		sl->writes++;
		sl->bytes += len;
		if (verbose) {
			/* The client's bytes, escaped: they reach a terminal. */
			char shown[4 * 60 + 1];

			logf_("client %u: RDMA write of %u bytes: \"%s\"", sl->id, len,
			      escape_text(shown, sizeof(shown), w->addr, len > 60 ? 60 : len));
		}
		sl->send_busy[slot] = true;
		return post_send(c, slot, APP_ACK_LEN, APP_IMM_WRITE_ACK) ? -1 : 0;
	}
	memcpy(out, in, wc->byte_len);
	sl->echoes++;
	sl->bytes += wc->byte_len;
	sl->send_busy[slot] = true;
	/* The receive slot goes back up when its echo has been sent. */
	return post_send(c, slot, wc->byte_len, APP_IMM_ECHO) ? -1 : 0;
}

/* Completions served per client per turn of the loop. */
#define CQ_BATCH 16

/* Serve one batch of a client's completions; true when more may wait. */
static bool on_cq(struct server *s, struct slot *sl)
{
	struct ibv_wc wc[CQ_BATCH];
	int n = srdma_conn_poll_wc(sl->conn, wc, CQ_BATCH);

	if (n < 0) {
		close_slot(s, sl, SRDMA_ERROR_INTERNAL, "completion queue error");
		return false;
	}
	for (int k = 0; k < n; k++) {
		char why[96];

		if (wc[k].status != IBV_WC_SUCCESS) {
			snprintf(why, sizeof(why), "QP error: %s", ibv_wc_status_str(wc[k].status));
			close_slot(s, sl, SRDMA_ERROR_QP, why);
			return false;
		}
		if (wc[k].wr_id >= SRDMA_SLOTS) {
			close_slot(s, sl, SRDMA_ERROR_INTERNAL, "internal error: bad work request id");
			return false;
		}
		if (wc[k].opcode & IBV_WC_RECV) {
			if (on_recv(sl, &wc[k])) {
				close_slot(s, sl, SRDMA_ERROR_BAD_MESSAGE, "bad RDMA message");
				return false;
			}
		} else {
			sl->send_busy[wc[k].wr_id] = false;
			if (srdma_conn_post_recv(sl->conn, (unsigned int)wc[k].wr_id)) {
				close_slot(s, sl, SRDMA_ERROR_INTERNAL, "cannot post a receive");
				return false;
			}
		}
	}
	return n == CQ_BATCH;
}

/* One turn for each client that was waiting when the turn began. */
static void serve_ready(struct server *s)
{
	for (unsigned int turns = s->ready_len; turns > 0; turns--) {
		unsigned int idx = s->ready[s->ready_head];
		struct slot *sl = &s->slots[idx];

		s->ready_head = (s->ready_head + 1) % s->max_clients;
		s->ready_len--;
		sl->queued = false;
		if (sl->state == SLOT_ACTIVE && on_cq(s, sl))
			enqueue(s, idx);
	}
}

static void on_ctrl(struct server *s, struct slot *sl)
{
	struct srdma_err err;
	int rc = srdma_conn_poll_ctrl(sl->conn, &err);
	char why[sizeof(err.step) + sizeof(err.msg) + 32];
	uint16_t code = 0;

	if (rc == 0)
		return;
	if (rc > 0 && err.code == 0) {
		snprintf(why, sizeof(why), "client said bye");
	} else if (rc > 0 && err.code == -ECONNABORTED) {
		snprintf(why, sizeof(why), "client reported: %s", err.msg);
	} else if (rc > 0 && err.code == -ETIMEDOUT) {
		snprintf(why, sizeof(why), "%s", err.msg);
		code = SRDMA_ERROR_NOT_RESPONDING;
	} else if (rc > 0) {
		snprintf(why, sizeof(why), "%s", err.msg);
	} else {
		snprintf(why, sizeof(why), "%s: %s", err.step, err.msg);
		code = SRDMA_ERROR_BAD_MESSAGE;
	}
	close_slot(s, sl, code, why);
}

/* Liveness: each client whose control timer is due is served now. */
static void on_tick(struct server *s)
{
	struct ratelimit *rls[] = { &s->rl_accept, &s->rl_refused, &s->rl_evicted,
				    &s->rl_failed, &s->rl_dropped };

	for (unsigned int i = 0; i < s->max_clients; i++) {
		struct slot *sl = &s->slots[i];

		if (sl->state == SLOT_ACTIVE && srdma_conn_ctrl_timeout_ms(sl->conn) == 0)
			on_ctrl(s, sl);
	}
	/* Say how many lines a past second suppressed, without waiting
	 * for the next line of that kind. */
	for (size_t i = 0; i < sizeof(rls) / sizeof(rls[0]); i++)
		rl_roll(rls[i], now_us());
	s->next_tick = now_us() + s->tick_ms * 1000.0;
}

/* How long the loop may sleep: not past a due tick or the listener's rest,
 * and not at all while clients wait for their turn. */
static int loop_timeout(const struct server *s)
{
	double until = s->next_tick, left;

	if (s->ready_len)
		return 0;
	if (s->listen_paused && s->listen_resume < until)
		until = s->listen_resume;
	left = (until - now_us()) / 1000;
	return left <= 0 ? 0 : (int)left + 1;
}

/* --- main --- */

/*
 * Each client holds two descriptors (TLS socket, completion channel), a
 * handshake three, a refusal two. Raise the soft limit to fit; a hard
 * limit too low for --max-clients is reported up front.
 */
static void fit_nofile(const struct server *s)
{
	unsigned long want = 2ul * s->max_clients + 3ul * s->max_handshakes +
			     2 * MAX_REJECTS + 64;
	unsigned long have = raise_nofile(want);

	if (have < want)
		logf_("warning: %lu file descriptors allowed, %lu needed for --max-clients %u: "
		      "raise 'ulimit -Hn'", have, want, s->max_clients);
}

static int parse_args(int argc, char **argv, struct srdma_server_opts *o,
		      unsigned int *max_clients, unsigned int *max_handshakes)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "client-ca", required_argument, NULL, 'C' },
		{ "max-clients", required_argument, NULL, 'm' },
		{ "max-handshakes", required_argument, NULL, 'H' },
		{ "dev", required_argument, NULL, 'd' },
		{ "ib-port", required_argument, NULL, 'i' },
		{ "gid-index", required_argument, NULL, 'g' },
		{ "buf-size", required_argument, NULL, 's' },
		{ "handshake-timeout", required_argument, NULL, 't' },
		{ "peer-timeout", required_argument, NULL, 'T' },
		{ "crl", required_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "psn-mode", required_argument, NULL, 'P' },
		{ "no-resumption", no_argument, NULL, 'R' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	unsigned long v;
	int ch;

	while ((ch = getopt_long(argc, argv, "p:b:c:k:C:m:H:d:i:g:s:t:T:r:P:RvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			if (!parse_ulong(prog, "--port", optarg, 1, 65535, &v))
				return 2;
			o->port = (uint16_t)v;
			break;
		case 'b': o->bind_addr = optarg; break;
		case 'c': o->cert_file = optarg; break;
		case 'k': o->key_file = optarg; break;
		case 'C': o->client_ca = optarg; break;
		case 'm':
			if (!parse_ulong(prog, "--max-clients", optarg, 1, 100000, &v))
				return 2;
			*max_clients = (unsigned int)v;
			break;
		case 'H':
			if (!parse_ulong(prog, "--max-handshakes", optarg, 1, 10000, &v))
				return 2;
			*max_handshakes = (unsigned int)v;
			break;
		case 'd': o->rdma.dev_name = optarg; break;
		case 'i':
			if (!parse_ulong(prog, "--ib-port", optarg, 1, 255, &v))
				return 2;
			o->rdma.ib_port = (int)v;
			break;
		case 'g':
			if (!parse_ulong(prog, "--gid-index", optarg, 0, 255, &v))
				return 2;
			o->rdma.gid_index = (int)v;
			break;
		case 's':
			if (!parse_ulong(prog, "--buf-size", optarg, 64, SRDMA_MAX_BUF_SIZE, &v))
				return 2;
			o->rdma.buf_size = v;
			break;
		case 't':
			if (!parse_ulong(prog, "--handshake-timeout", optarg, 100, 600000, &v))
				return 2;
			o->handshake_ms = (int)v;
			break;
		case 'T':
			if (!parse_peer_timeout(prog, optarg, &o->peer_timeout_ms))
				return 2;
			break;
		case 'r': o->crl_file = optarg; break;
		case 'P':
			if (!strcmp(optarg, "exchange"))
				o->rdma.psn_mode = SRDMA_PSN_EXCHANGE;
			else if (!strcmp(optarg, "exporter"))
				o->rdma.psn_mode = SRDMA_PSN_EXPORTER;
			else {
				fprintf(stderr, "%s: --psn-mode: '%s' is not exchange or exporter\n",
					prog, optarg);
				return 2;
			}
			break;
		case 'R': o->no_resumption = 1; break;
		case 'v': verbose = 1; break;
		case 'V': printf("srdma-server %s\n", srdma_version()); exit(0);
		case 'h': usage(stdout); exit(0);
		default:
			fprintf(stderr, "Try '%s --help'.\n", prog);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", prog,
			argv[optind], prog);
		return 2;
	}
	if (!o->cert_file || !o->key_file) {
		fprintf(stderr, "%s: --cert and --key are required\nTry '%s --help'.\n", prog, prog);
		return 2;
	}
	return 0;
}

static void shutdown_all(struct server *s)
{
	/* Handshakes in flight fail fast once their sockets are shut. */
	pthread_mutex_lock(&s->lock);
	for (unsigned int i = 0; i < s->pend_len; i++)
		if (s->pend[i].state == PEND_RUNNING)
			shutdown(s->pend[i].hold_fd, SHUT_RDWR);
	pthread_mutex_unlock(&s->lock);
	for (unsigned int i = 0; i < s->pend_len; i++) {
		struct pending *p = &s->pend[i];

		if (p->state == PEND_FREE)
			continue;
		pthread_join(p->thread, NULL);
		close(p->hold_fd);
		if (!p->rc)
			srdma_conn_close(p->conn, SRDMA_ERROR_SHUTDOWN, "server shutting down");
		p->state = PEND_FREE;
	}
	for (unsigned int i = 0; i < s->max_clients; i++)
		if (s->slots[i].state == SLOT_ACTIVE)
			close_slot(s, &s->slots[i], 0, "server shutting down");
	for (int i = 0; i < MAX_REJECTS; i++)
		if (s->rejects[i].busy)
			shutdown(s->rejects[i].hold_fd, SHUT_RDWR);
	reap_rejects(s, true);
}

int main(int argc, char **argv)
{
	struct srdma_server_opts o;
	struct server s = { .max_clients = SRDMA_DEFAULT_MAX_CLIENTS, .max_handshakes = 64,
			    .epfd = -1, .sigfd = -1, .evfd = -1,
			    .rl_accept = { .what = "accept failed" },
			    .rl_refused = { .what = "refused a connection" },
			    .rl_evicted = { .what = "handshake evicted" },
			    .rl_failed = { .what = "setup failed" },
			    .rl_dropped = { .what = "dropped a connection" } };
	struct srdma_err err;
	sigset_t sigs;
	int rc, status = 1;

	srdma_server_opts_init(&o);
	rc = parse_args(argc, argv, &o, &s.max_clients, &s.max_handshakes);
	if (rc)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGUSR1);
	/* Blocked in every thread; read from the signalfd in the loop. */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	pthread_mutex_init(&s.lock, NULL);
	fit_nofile(&s);

	s.slots = calloc(s.max_clients, sizeof(*s.slots));
	s.ready = calloc(s.max_clients, sizeof(*s.ready));
	s.pend_len = 2 * s.max_handshakes;
	s.pend = calloc(s.pend_len, sizeof(*s.pend));
	if (!s.slots || !s.ready || !s.pend) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return 1;
	}
	if (srdma_listen(&o, &s.l, &err)) {
		fprintf(stderr, "%s: %s failed: %s\n", prog, err.step, err.msg);
		goto out;
	}
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	s.sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	s.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s.epfd < 0 || s.sigfd < 0 || s.evfd < 0 ||
	    !watch(&s, srdma_listener_fd(s.l), EV_LISTEN) ||
	    !watch(&s, s.sigfd, EV_SIGNAL) || !watch(&s, s.evfd, EV_HANDSHAKE)) {
		fprintf(stderr, "%s: event setup failed: %s\n", prog, strerror(errno));
		goto out;
	}
	read_counters(s.l, counters_at_start);
	logf_("srdma-server %s listening on %s port %u, up to %u clients%s",
	      srdma_version(), o.bind_addr ? o.bind_addr : "all addresses",
	      srdma_listener_port(s.l), s.max_clients,
	      o.client_ca ? ", client certificates required" : "");

	/* Liveness timers are looked at six times per peer timeout (at most
	 * once a second): a dead client is gone within 7/6 of it. */
	s.tick_ms = o.peer_timeout_ms < 0 ? 1000 :
		    (o.peer_timeout_ms ? o.peer_timeout_ms : SRDMA_DEFAULT_PEER_TIMEOUT_MS) / 6;
	if (s.tick_ms > 1000)
		s.tick_ms = 1000;
	s.next_tick = now_us() + s.tick_ms * 1000.0;

	for (;;) {
		struct epoll_event ev[64];
		int n = epoll_wait(s.epfd, ev, 64, loop_timeout(&s));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "%s: epoll_wait: %s\n", prog, strerror(errno));
			break;
		}
		for (int k = 0; k < n; k++) {
			uint64_t tag = ev[k].data.u64;
			unsigned int idx = (unsigned int)(tag >> 8);

			switch (tag & 0xff) {
			case EV_LISTEN:
				on_listen(&s);
				break;
			case EV_HANDSHAKE:
				on_handshakes(&s);
				break;
			case EV_SIGNAL: {
				struct signalfd_siginfo si;

				if (read(s.sigfd, &si, sizeof(si)) != sizeof(si))
					break;
				if (si.ssi_signo == SIGUSR1) {
					log_stats(&s, "SIGUSR1");
					break;
				}
				logf_("signal %s: shutting down", strsignal((int)si.ssi_signo));
				status = 0;
				goto out;
			}
			case EV_CTRL:
				if (s.slots[idx].state == SLOT_ACTIVE)
					on_ctrl(&s, &s.slots[idx]);
				break;
			case EV_CQ:
				if (s.slots[idx].state == SLOT_ACTIVE)
					enqueue(&s, idx);
				break;
			}
		}
		if (s.listen_paused && now_us() >= s.listen_resume) {
			s.listen_paused = false;
			if (watch(&s, srdma_listener_fd(s.l), EV_LISTEN))
				on_listen(&s);
			else
				pause_listener(&s, strerror(errno));
		}
		if (now_us() >= s.next_tick)
			on_tick(&s);
		serve_ready(&s);
	}
out:
	if (s.l) {
		shutdown_all(&s);
		if (status == 0)
			log_stats(&s, "at exit");
	}
	if (s.evfd >= 0)
		close(s.evfd);
	if (s.sigfd >= 0)
		close(s.sigfd);
	if (s.epfd >= 0)
		close(s.epfd);
	srdma_listener_free(s.l);
	free(s.slots);
	free(s.ready);
	free(s.pend);
	pthread_mutex_destroy(&s.lock);
	if (status == 0)
		logf_("stopped");
	return status;
}
