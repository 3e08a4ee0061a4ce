/*
 * srdma-server: serves secure RDMA connections to srdma-client.
 *
 * One thread runs an epoll loop over the library's acceptor (one descriptor:
 * new clients, refusals, failed setups), a signalfd, and each connected
 * client's TLS socket and completion channel: an idle server sleeps in
 * epoll_wait. Admission control (setups on the library's threads, the
 * client cap, eviction, deadlines, "server full") is libsrdma's; this
 * program is options, logging and the echo / write-ack protocol.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
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
	unsigned int held;		/* receive slots held for a reply */
	/* Shared mode: replies posted and not complete (at most the send
	 * queue's depth), and those waiting for room (a FIFO). */
	unsigned int inflight, wait_head, wait_len;
	struct { unsigned int slot; uint32_t len, imm; } waiting[SRDMA_SLOTS];
	double answered_us;		/* shared mode: when the oldest held
					 * answer began to wait (now_us()) */
	unsigned long echoes, writes;
	unsigned long long bytes;
	uint32_t epoch;			/* rekeys logged so far */
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

struct server {
	struct srdma_listener *l;
	int epfd, sigfd;
	struct slot *slots;
	unsigned int max_clients, active;
	/* Clients whose CQs may hold more than one batch: served round-robin,
	 * a batch each per turn of the loop (a ring of slot indices). */
	unsigned int *ready;
	unsigned int ready_head, ready_len;
	int tick_ms;			/* liveness timers looked at this often */
	/* When a client's timer (liveness, or in shared mode its untaken
	 * answers) is next due, now_us(): ticks before it scan nobody, so an
	 * idle server with 10,000 clients does not walk them every second. */
	double next_scan;
	/* Shared mode (--srq): one completion fd for every client; more
	 * completions may wait after a full batch. */
	bool shared, wc_more;
	double next_tick;
	struct ratelimit rl_accept, rl_refused, rl_evicted, rl_failed;
	/* The injection watch (on_tick, once a second): the port's sequence
	 * counters and packets received at the last look. */
	struct watch *watch;
};

/* What an alarm does to the port's clients (--on-alarm). */
enum alarm_action { ALARM_REKEY, ALARM_CLOSE, ALARM_LOG };
static const char *const alarm_names[] = { "rekey", "close", "log" };

/* epoll data: pointer-sized tags (kind in the low bits of a slot index). */
enum { EV_LISTEN = 1, EV_SIGNAL, EV_CTRL, EV_CQ, EV_WC };
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
"CQs, QP and memory (with --srq, its own QP, send CQ and write window beside\n"
"one shared receive pool). The server echoes each SEND back and accepts RDMA WRITEs\n"
"into the client's window, acknowledging each with a SHA-256 of what landed.\n"
"With --seal every message is encrypted and authenticated in software.\n"
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
"                         (default 64); these take no client slot. When all\n"
"                         run, one whose client has sent nothing for\n"
"                         --silent-ms (or spoke and stopped, --stall-ms),\n"
"                         is evicted to make room; a setup making progress\n"
"                         never is, and new connections wait in the\n"
"                         kernel's queue, served in order\n"
"      --silent-ms MS     a connection silent this long since it was\n"
"                         accepted may be evicted, 1..600000 (default 1000)\n"
"      --stall-ms MS      a connection whose client spoke and then stopped,\n"
"                         its setup waiting on it this long, may be evicted,\n"
"                         0..600000 (default 0: never; see SECURITY.md)\n"
"      --prepared N       QPs with their buffers made ahead of need by a\n"
"                         background thread, so that setups do not wait for\n"
"                         them, 0..1024 (default 4; 0: none)\n"
"      --qpn-spread BITS  before each prepared QP, skip a random number of\n"
"                         QPNs below 2^BITS, and hand prepared QPs out in\n"
"                         random order, so that the next client's QPN\n"
"                         cannot be told from this one's on devices that\n"
"                         count QPNs up (rxe), 0..12 (default 4; 0: off)\n"
"      --srq N            shared mode, for many mostly idle clients: one\n"
"                         receive pool of N slots (a shared receive queue,\n"
"                         16..65536) for every client instead of 16 receive\n"
"                         and 16 send slots each; replies go out of the\n"
"                         receive slot; each client's write window stays its\n"
"                         own (a memory window bound to its QP). A client\n"
"                         with more than 16 messages unanswered, or whose\n"
"                         answers wait 5 s untaken, is closed (default: off)\n"
"      --alarm-threshold N  the port's sequence-error counters are read once a\n"
"                         second; more than N new errors (plus 1%% of the\n"
"                         packets received) raise an injection alarm: a log\n"
"                         line, a JSON event, and --on-alarm (default 100;\n"
"                         0: off)\n"
"      --on-alarm ACTION  rekey (default: every client moves to a fresh QP\n"
"                         and PSNs, so a sweep aims at nothing), close (every\n"
"                         client is disconnected), or log; at most one alarm\n"
"                         in 5 s. With --srq: log (rekey is not available)\n"
"      --rekey-interval SECONDS  move every client to a fresh QP with new PSNs\n"
"                         (and seal keys) this often, make before break, so\n"
"                         that no QPN and PSN pair lives long enough for a\n"
"                         PSN sweep; not with --srq (default: off)\n"
"  -d, --dev NAME         RDMA device (default: the first)\n"
"  -i, --ib-port N        device port (default 1)\n"
"  -g, --gid-index N      GID index (default: a RoCE v2 GID with an IPv4\n"
"                         address, else a RoCE v2 GID, else 0)\n"
"  -s, --buf-size BYTES   message slot and write window size, 64..1073741824\n"
"                         (default 4096)\n"
"  -t, --timeout MS       deadline for a client's whole setup, 100..600000\n"
"                         (default 10000; also --handshake-timeout)\n"
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
SEAL_HELP
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
"SIGUSR1: logs a stats line: clients, the port's PSN-sequence counters\n"
"(out-of-sequence and duplicate requests: injection attempts show there) and\n"
"how many injection alarms were raised.\n"
"A client whose QP fails (error completion) is disconnected with the reason.\n"
"Busy clients are served in turns, a batch of completions each, so none can\n"
"starve the others, new connections or signals. Repeated log lines (refusals,\n"
"evictions, failed setups, accept errors) are limited to 10 a second each.\n"
"Exit status: 0 after a signal, 1 when setup fails (the message says which\n"
"step and why), 2 on bad usage.\n");
}

/* A client's timer falls due at when (now_us()): the tick looks then. */
static void due_at(struct server *s, double when)
{
	if (when < s->next_scan)
		s->next_scan = when;
}

/* The tick looks again when sl's control-channel timer comes due. */
static void due_ctrl(struct server *s, const struct slot *sl)
{
	int t = srdma_conn_ctrl_timeout_ms(sl->conn);

	if (t >= 0)
		due_at(s, now_us() + t * 1000.0);
}

static void close_slot(struct server *s, struct slot *sl, uint16_t code,
		       const char *reason)
{
	int ctrl = srdma_conn_ctrl_fd(sl->conn);
	struct ibv_comp_channel *ch = srdma_conn_channel(sl->conn);

	epoll_ctl(s->epfd, EPOLL_CTL_DEL, ctrl, NULL);
	if (ch)
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

/* One counter of the listener's port: -1 where the device has none. */
static long long read_counter(const struct srdma_listener *l, const char *name)
{
	char path[256];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%d/hw_counters/%s",
		 srdma_listener_device(l), srdma_listener_ib_port(l), name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static void read_counters(const struct srdma_listener *l, long long v[N_SEQ_COUNTERS])
{
	for (size_t i = 0; i < N_SEQ_COUNTERS; i++)
		v[i] = read_counter(l, seq_counters[i]);
}

static long long counters_at_start[N_SEQ_COUNTERS];

/*
 * The injection watch. Once a second the port's sequence-error counters
 * are read (a few sysfs files: nothing an idle server notices); what
 * they gained beyond what the traffic explains (--alarm-threshold a
 * second, plus 1% of the packets received, which a lossy link may retry)
 * raises an alarm: a log line, a JSON event, a count in the stats, and the
 * response: every client rekeyed (a fresh QP and PSNs, which leaves a
 * sweep aiming at nothing), closed, or only logged. After an alarm the
 * next waits 5 s, so that a sweep does not rekey clients in a loop.
 */
#define WATCH_MS 1000
#define ALARM_QUIET_MS 5000
#define ALARM_DEFAULT_THRESHOLD 100
struct watch {
	unsigned int threshold;		/* 0: off */
	enum alarm_action action;
	bool action_given;		/* --on-alarm on the command line */
	long long seq[N_SEQ_COUNTERS], rcvd;
	double at, next, quiet_until;
	unsigned long long alarms;
};
static struct watch the_watch = { .threshold = ALARM_DEFAULT_THRESHOLD, .action = ALARM_REKEY };


static void log_stats(struct server *s, const char *why)
{
	struct srdma_listener_stats st;
	long long now[N_SEQ_COUNTERS];
	char line[512];
	size_t len = 0;

	read_counters(s->l, now);
	for (size_t i = 0; i < N_SEQ_COUNTERS && len < sizeof(line); i++)
		if (now[i] >= 0)
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %s=%lld (+%lld)",
						seq_counters[i], now[i],
						now[i] - (counters_at_start[i] > 0 ? counters_at_start[i] : 0));
	srdma_listener_stats(s->l, &st, sizeof(st));
	logf_("stats (%s): %u clients, %llu connections so far (%llu refused, %llu failed, "
	      "%llu evicted, %llu waits for room); %s port %d counters:%s; %llu injection alarms",
	      why, s->active, st.accepted, st.refused, st.failed, st.evicted, st.waits,
	      srdma_listener_device(s->l), srdma_listener_ib_port(s->l),
	      len ? line : " none readable", s->watch->alarms);
}

/* --- new connections --- */

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
	srdma_conn_set_context(sl->conn, sl);
	if (!watch(s, srdma_conn_ctrl_fd(sl->conn), EV_TAG(EV_CTRL, idx)) ||
	    (ch && !watch(s, ch->fd, EV_TAG(EV_CQ, idx)))) {
		close_slot(s, sl, SRDMA_ERROR_INTERNAL, "internal error");
		return;
	}
	due_ctrl(s, sl);
	logf_("client %u: accepted from %s, %s %s%s%s", sl->id, i->peer_addr,
	      i->tls_version, i->tls_cipher, i->peer_cert_subject[0] ? ", cert " : "",
	      i->peer_cert_subject);
	logf_("client %u: QP up on %s: QPN 0x%06x <-> 0x%06x, MTU %d, PSNs (%s) set and verified, peer bound%s%s",
	      sl->id, i->dev_name, i->local_qpn, i->remote_qpn,
	      128 << i->path_mtu, i->psn_mode == SRDMA_PSN_EXPORTER ? "exporter" : "exchange",
	      i->seal ? ", sealed with " : "", i->seal ? srdma_seal_name(i->seal) : "");
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

/* Events from the acceptor: a client set up, refused, or failed. */
#define EVENTS_PER_WAKE 64

static void on_connected(struct server *s, const struct srdma_event *ev)
{
	unsigned int idx;
	struct slot *sl = free_slot(s, &idx);
	bool queued;

	if (!sl) {
		/* The library holds to max_clients; this is a bug if seen. */
		logf_("client %u: no free slot", ev->id);
		srdma_conn_close(ev->conn, SRDMA_ERROR_INTERNAL, "internal error");
		return;
	}
	queued = sl->queued;	/* its old entry may still be in the ring */
	memset(sl, 0, sizeof(*sl));
	sl->queued = queued;
	sl->id = ev->id;
	sl->conn = ev->conn;
	activate(s, sl, idx);
	/* A SEND may have landed before we watched the channel. (In shared
	 * mode the listener's completion fd wakes for it.) */
	if (sl->state == SLOT_ACTIVE && !s->shared)
		enqueue(s, idx);
}

static void on_listener(struct server *s)
{
	for (int n = 0; n < EVENTS_PER_WAKE; n++) {
		const struct srdma_event *ev;
		int rc = srdma_listener_get_event(s->l, &ev);

		if (rc <= 0) {
			if (rc < 0)
				logf_limited(&s->rl_accept, "acceptor failed: %s", strerror(-rc));
			return;
		}
		switch (ev->type) {
		case SRDMA_EVENT_CONNECTED:
			on_connected(s, ev);
			break;
		case SRDMA_EVENT_REFUSED:
			logf_limited(&s->rl_refused, "refused a connection: %s (client %u from %s)",
				     ev->err.msg, ev->id, ev->peer_addr);
			break;
		case SRDMA_EVENT_FAILED:
			if (ev->err.code == -ECANCELED)
				logf_limited(&s->rl_evicted,
					     "client %u: handshake evicted; setup failed at %s: %s",
					     ev->id, ev->err.step, ev->err.msg);
			else
				logf_limited(&s->rl_failed, "client %u: setup failed at %s: %s",
					     ev->id, ev->err.step, ev->err.msg);
			break;
		case SRDMA_EVENT_ACCEPT_ERROR:
			logf_limited(&s->rl_accept, "accept failed: %s", ev->err.msg);
			break;
		}
	}
}

/* --- traffic --- */

/* The reply to what arrived in receive slot slot: from the send slot of
 * that number, or in shared mode (no send slots) from the receive slot. */
static int post_send(struct srdma_conn *c, unsigned int slot, uint32_t len,
		     uint32_t imm)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c)->len ? srdma_conn_send_buf(c)
								 : srdma_conn_recv_buf(c);
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

static unsigned int hold_max;	/* shared mode: the send queue's depth */

/* Send a reply; in shared mode one that finds the send queue full waits
 * for room (the library bounds what a client holds: SRDMA_SLOTS). */
static int reply(struct slot *sl, unsigned int slot, uint32_t len, uint32_t imm)
{
	if (!hold_max)
		return post_send(sl->conn, slot, len, imm) ? -1 : 0;
	if (sl->inflight >= hold_max) {
		unsigned int i = (sl->wait_head + sl->wait_len) % SRDMA_SLOTS;

		if (sl->wait_len == SRDMA_SLOTS)
			return -1;
		sl->waiting[i].slot = slot;
		sl->waiting[i].len = len;
		sl->waiting[i].imm = imm;
		sl->wait_len++;
		return 0;
	}
	sl->inflight++;
	return post_send(sl->conn, slot, len, imm) ? -1 : 0;
}

/* Sealed (--seal): open what arrived at in (len bytes) as kind want. -2
 * when it does not open (the library has ended the connection: why says
 * why), -1 when it opens as another kind. */
static int open_as(struct slot *sl, void *in, size_t len, uint16_t want, void **msg,
		   size_t *mlen, char *why, size_t why_len)
{
	struct srdma_err err;
	uint16_t kind;

	if (srdma_conn_open(sl->conn, in, len, &kind, msg, mlen)) {
		srdma_conn_poll_ctrl(sl->conn, &err);
		snprintf(why, why_len, "%.180s", err.msg);
		return -2;
	}
	if (kind != want) {
		snprintf(why, why_len, "a sealed message of kind %u where %u was due", kind, want);
		return -1;
	}
	return 0;
}

/* A receive completed in slot: echo it, or acknowledge a write. Sealed,
 * each is opened first, and the answer sealed. -1: a bad message (why
 * says what), -2: a sealed one refused. */
static int on_recv(struct slot *sl, const struct ibv_wc *wc, char *why, size_t why_len)
{
	struct srdma_conn *c = sl->conn;
	size_t bs = srdma_conn_buf_size(c);
	unsigned int slot = (unsigned int)wc->wr_id;
	unsigned char *in = (unsigned char *)srdma_conn_recv_buf(c)->addr + slot * bs;
	unsigned char *out = srdma_conn_send_buf(c)->len
			     ? (unsigned char *)srdma_conn_send_buf(c)->addr + slot * bs
			     : in;	/* shared mode: in place */
	bool sealed = srdma_conn_info(c)->seal != SRDMA_SEAL_OFF;
	void *msg;
	size_t len, sealed_len;
	int rc;

	if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
		const struct srdma_buf *w = srdma_conn_window(c);
		unsigned char ack[APP_ACK_LEN];
		uint32_t be;

		len = ntohl(wc->imm_data);
		if (len > w->len) {
			snprintf(why, why_len, "a write notification of %zu bytes exceeds the "
				 "%zu-byte window", len, w->len);
			return -1;
		}
		msg = w->addr;
		if (sealed) {
			rc = open_as(sl, w->addr, len, APP_KIND_WRITE, &msg, &len, why, why_len);
			if (rc)
				return rc;
		}
		be = htonl((uint32_t)len);
		memcpy(ack, &be, 4);
		if (sha256(msg, len, ack + 4)) {
			snprintf(why, why_len, "SHA-256 failed");
			return -1;
		}
		sl->writes++;
		sl->bytes += len;
		if (verbose) {
			/* The client's bytes, escaped: they reach a terminal. */
			char shown[4 * 60 + 1];

			logf_("client %u: RDMA write of %zu bytes: \"%s\"", sl->id, len,
			      escape_text(shown, sizeof(shown), msg, len > 60 ? 60 : len));
		}
		sl->held++;
		if (!sealed) {
			memcpy(out, ack, sizeof(ack));
			return reply(sl, slot, APP_ACK_LEN, APP_IMM_WRITE_ACK);
		}
		if (srdma_conn_seal(c, APP_KIND_WRITE, ack, sizeof(ack), out, bs, &sealed_len)) {
			snprintf(why, why_len, "cannot seal the acknowledgement");
			return -1;
		}
		return reply(sl, slot, (uint32_t)sealed_len, APP_IMM_WRITE_ACK);
	}
	len = wc->byte_len;
	if (sealed) {
		rc = open_as(sl, in, len, APP_KIND_ECHO, &msg, &len, why, why_len);
		/* Sealed again from where it was opened: in place in shared
		 * mode, else into the send slot. */
		if (!rc && srdma_conn_seal(c, APP_KIND_ECHO, msg, len, out, bs, &sealed_len)) {
			snprintf(why, why_len, "cannot seal the echo");
			rc = -1;
		}
		if (rc)
			return rc;
	} else {
		if (out != in)
			memcpy(out, in, len);
		sealed_len = len;
	}
	sl->echoes++;
	sl->bytes += len;
	sl->held++;
	/* The receive slot goes back up when its echo has been sent. */
	return reply(sl, slot, (uint32_t)sealed_len, APP_IMM_ECHO);
}

/* on_recv(), and a client whose message is bad closed with the reason
 * (SRDMA_ERROR_SEAL for a sealed one refused). false: closed. */
static bool serve_recv(struct server *s, struct slot *sl, const struct ibv_wc *wc)
{
	char why[200], reason[240];
	int rc;

	why[0] = '\0';
	rc = on_recv(sl, wc, why, sizeof(why));
	if (!rc)
		return true;
	snprintf(reason, sizeof(reason), "%s: %s",
		 rc == -2 ? "sealed message refused" : "bad RDMA message",
		 why[0] ? why : "cannot post the answer");
	close_slot(s, sl, rc == -2 ? SRDMA_ERROR_SEAL : SRDMA_ERROR_BAD_MESSAGE, reason);
	return false;
}

/* Shared mode: how long a client may leave its answers untaken. */
#define ANSWER_WAIT_MS 5000

/* Completions served per client per turn of the loop. */
#define CQ_BATCH 16

/* Serve one batch of a client's completions; true when more may wait. */
static void note_rekey(struct slot *sl);

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
			if (!serve_recv(s, sl, &wc[k]))
				return false;
		} else {
			sl->held--;
			if (srdma_conn_post_recv(sl->conn, (unsigned int)wc[k].wr_id)) {
				close_slot(s, sl, SRDMA_ERROR_INTERNAL, "cannot post a receive");
				return false;
			}
		}
	}
	note_rekey(sl);
	due_ctrl(s, sl);	/* a rekey may have ended, or started to wait */
	return n == CQ_BATCH;
}

/* Shared mode: one client's completion. false: the client was closed. */
static bool on_shared_wc(struct server *s, struct slot *sl, const struct ibv_wc *wc)
{
	char why[128];

	if (wc->wr_id == SRDMA_WR_ID_OVERRUN) {
		close_slot(s, sl, SRDMA_ERROR_BAD_MESSAGE,
			   "more than 16 messages unanswered, or an invalidate "
			   "(the receive pool is shared)");
		return false;
	}
	if (wc->status != IBV_WC_SUCCESS) {
		snprintf(why, sizeof(why), "QP error: %s", ibv_wc_status_str(wc->status));
		close_slot(s, sl, SRDMA_ERROR_QP, why);
		return false;
	}
	if (!(wc->opcode & IBV_WC_RECV)) {
		sl->held--;
		sl->inflight--;
		sl->answered_us = now_us();
		if (srdma_conn_post_recv(sl->conn, (unsigned int)wc->wr_id)) {
			close_slot(s, sl, SRDMA_ERROR_INTERNAL, "cannot post a receive");
			return false;
		}
		if (sl->wait_len) {	/* room for a waiting reply */
			unsigned int i = sl->wait_head;

			sl->wait_head = (sl->wait_head + 1) % SRDMA_SLOTS;
			sl->wait_len--;
			if (reply(sl, sl->waiting[i].slot, sl->waiting[i].len,
				  sl->waiting[i].imm)) {
				close_slot(s, sl, SRDMA_ERROR_INTERNAL, "cannot post a send");
				return false;
			}
		}
		return true;
	}
	if (!sl->held) {
		sl->answered_us = now_us();	/* the wait for an answer starts */
		due_at(s, sl->answered_us + ANSWER_WAIT_MS * 1000.0);
	}
	return serve_recv(s, sl, wc);
}

/* Shared mode: a few batches of every client's completions, then the
 * loop's other work; wc_more says whether more may wait. */
static void serve_shared(struct server *s)
{
	struct srdma_wc wc[CQ_BATCH * 4];
	int n = 0;

	for (int batch = 0; batch < 4; batch++) {
		n = srdma_listener_poll_wc(s->l, wc, CQ_BATCH * 4);
		if (n < 0) {
			logf_("completion poll failed: %s", strerror(-n));
			break;
		}
		for (int k = 0; k < n; k++) {
			struct srdma_conn *c = wc[k].conn;
			struct slot *sl = c ? srdma_conn_context(c) : NULL;

			if (!sl || sl->state != SLOT_ACTIVE || sl->conn != c)
				continue;
			if (!on_shared_wc(s, sl, &wc[k].wc))
				/* Closed: its later completions in this batch
				 * name a freed connection. */
				for (int j = k + 1; j < n; j++)
					if (wc[j].conn == c)
						wc[j].conn = NULL;
		}
		if (n < CQ_BATCH * 4)
			break;
	}
	s->wc_more = n == CQ_BATCH * 4;
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

/* A rekey that has finished (its end comes in a poll of either kind). */
static void note_rekey(struct slot *sl)
{
	const struct srdma_conn_info *i = srdma_conn_info(sl->conn);

	if (i->epoch == sl->epoch)
		return;
	sl->epoch = i->epoch;
	logf_("client %u: rekeyed: QPN 0x%06x <-> 0x%06x, new PSNs%s (epoch %u)", sl->id,
	      i->local_qpn, i->remote_qpn, i->seal ? " and seal keys" : "", i->epoch);
}

static void on_ctrl(struct server *s, struct slot *sl)
{
	struct srdma_err err;
	int rc = srdma_conn_poll_ctrl(sl->conn, &err);
	char why[sizeof(err.step) + sizeof(err.msg) + 32];
	uint16_t code = 0;

	if (rc == 0) {
		note_rekey(sl);
		due_ctrl(s, sl);
		return;
	}
	switch (rc) {
	case SRDMA_CLOSE_BYE:
		snprintf(why, sizeof(why), "client said bye");
		break;
	case SRDMA_CLOSE_ERROR:
		snprintf(why, sizeof(why), "client reported: %s", err.msg);
		break;
	case SRDMA_CLOSE_TIMEOUT:
		snprintf(why, sizeof(why), "%s", err.msg);
		code = SRDMA_ERROR_NOT_RESPONDING;
		break;
	case SRDMA_CLOSE_PROTOCOL:
		snprintf(why, sizeof(why), "%s: %s", err.step, err.msg);
		code = SRDMA_ERROR_BAD_MESSAGE;
		break;
	default:	/* lost */
		snprintf(why, sizeof(why), "%s", err.msg);
		break;
	}
	close_slot(s, sl, code, why);
}

/* The alarm's response, to every client. */
static void respond(struct server *s, unsigned int *acted)
{
	struct srdma_err err;

	for (unsigned int i = 0; i < s->max_clients; i++) {
		struct slot *sl = &s->slots[i];

		if (sl->state != SLOT_ACTIVE)
			continue;
		if (s->watch->action == ALARM_CLOSE) {
			close_slot(s, sl, SRDMA_ERROR_SHUTDOWN,
				   "packet injection suspected on the port: connection closed");
			(*acted)++;
		} else if (s->watch->action == ALARM_REKEY) {
			int rc = srdma_conn_rekey(sl->conn, &err);

			if (rc == 0 || rc == -EBUSY)
				(*acted)++;
			else
				logf_("client %u: cannot rekey: %s", sl->id, err.msg);
			due_ctrl(s, sl);
		}
	}
}

/* Once a second: have the sequence counters climbed beyond the traffic? */
static void watch_counters(struct server *s, double now)
{
	struct watch *w = s->watch;
	long long seq[N_SEQ_COUNTERS], rcvd, errors = 0, allowed;
	char parts[256];
	size_t len = 0;
	unsigned int acted = 0;

	w->next = now + WATCH_MS * 1000.0;
	read_counters(s->l, seq);
	rcvd = read_counter(s->l, "rcvd_pkts");
	for (size_t i = 0; i < N_SEQ_COUNTERS; i++) {
		long long d = seq[i] >= 0 && w->seq[i] >= 0 ? seq[i] - w->seq[i] : 0;

		if (d > 0) {
			errors += d;
			if (len < sizeof(parts))
				len += (size_t)snprintf(parts + len, sizeof(parts) - len, "%s%s +%lld",
							len ? ", " : "", seq_counters[i], d);
		}
		w->seq[i] = seq[i];
	}
	allowed = (long long)w->threshold +
		  (rcvd >= 0 && w->rcvd >= 0 && rcvd > w->rcvd ? (rcvd - w->rcvd) / 100 : 0);
	w->rcvd = rcvd;
	if (errors <= allowed || now < w->quiet_until) {
		w->at = now;
		return;
	}
	w->alarms++;
	w->quiet_until = now + ALARM_QUIET_MS * 1000.0;
	respond(s, &acted);
	logf_("ALARM: packet injection suspected on %s port %d: %lld sequence errors in %.1f s "
	      "(%s), %lld explained by the traffic; %s: %u clients",
	      srdma_listener_device(s->l), srdma_listener_ib_port(s->l), errors,
	      (now - w->at) / 1e6, parts, allowed,
	      w->action == ALARM_REKEY ? "rekeying every client" :
	      w->action == ALARM_CLOSE ? "closing every client" : "logged only", acted);
	logf_("{\"event\":\"alarm\",\"device\":\"%s\",\"port\":%d,\"seq_errors\":%lld,"
	      "\"allowed\":%lld,\"window_ms\":%.0f,\"action\":\"%s\",\"clients\":%u,"
	      "\"alarms\":%llu}", srdma_listener_device(s->l), srdma_listener_ib_port(s->l),
	      errors, allowed, (now - w->at) / 1e3, alarm_names[w->action], acted, w->alarms);
	w->at = now;
}

/* Liveness: each client whose control timer is due is served now. */
static void on_tick(struct server *s)
{
	struct ratelimit *rls[] = { &s->rl_accept, &s->rl_refused, &s->rl_evicted,
				    &s->rl_failed };
	double now = now_us();

	if (now >= s->next_scan) {
		s->next_scan = HUGE_VAL;
		for (unsigned int i = 0; i < s->max_clients; i++) {
			struct slot *sl = &s->slots[i];

			if (sl->state != SLOT_ACTIVE)
				continue;
			if (srdma_conn_ctrl_timeout_ms(sl->conn) == 0)
				on_ctrl(s, sl);	/* sets its next due time */
			else
				due_ctrl(s, sl);
			/* Shared mode: a client that does not take its answers
			 * holds pool slots (its RNR stalls them): not for long. */
			if (!s->shared || sl->state != SLOT_ACTIVE || !sl->held)
				continue;
			if (now - sl->answered_us > ANSWER_WAIT_MS * 1000.0)
				close_slot(s, sl, SRDMA_ERROR_NOT_RESPONDING,
					   "answers not taken for 5 s (the receive pool is shared)");
			else
				due_at(s, sl->answered_us + ANSWER_WAIT_MS * 1000.0);
		}
	}
	if (s->watch->threshold && now >= s->watch->next)
		watch_counters(s, now);
	/* Say how many lines a past second suppressed, without waiting
	 * for the next line of that kind. */
	for (size_t i = 0; i < sizeof(rls) / sizeof(rls[0]); i++)
		rl_roll(rls[i], now_us());
	s->next_tick = now_us() + s->tick_ms * 1000.0;
}

/* How long the loop may sleep: not past a due tick, and not at all while
 * clients wait for their turn. */
static int loop_timeout(const struct server *s)
{
	double left;

	if (s->ready_len || s->wc_more)
		return 0;
	/* The next tick, or a client's timer (a rekey's) before it. */
	left = ((s->next_scan < s->next_tick ? s->next_scan : s->next_tick) - now_us()) / 1000;
	return left <= 0 ? 0 : (int)left + 1;
}

/* --- main --- */

/*
 * Each client holds two descriptors (TLS socket, completion channel); a
 * setup three, and libsrdma keeps room for twice max_handshakes of them
 * (evicted ones still ending); a refusal two; a prepared QP one. Raise the
 * soft limit to fit; a hard limit too low for --max-clients is reported up
 * front.
 */
static void fit_nofile(const struct server *s, unsigned int max_handshakes, int prepared)
{
	unsigned long want = 2ul * s->max_clients + 2 * 3ul * max_handshakes +
			     2ul * SRDMA_MAX_REJECTS + (prepared > 0 ? (unsigned long)prepared :
							 SRDMA_DEFAULT_PREPARED) + 64;
	unsigned long have = raise_nofile(want);

	if (have < want)
		logf_("warning: %lu file descriptors allowed, %lu needed for --max-clients %u: "
		      "raise 'ulimit -Hn'", have, want, s->max_clients);
}

static int parse_args(int argc, char **argv, struct srdma_server_opts *o)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "client-ca", required_argument, NULL, 'C' },
		{ "max-clients", required_argument, NULL, 'm' },
		{ "max-handshakes", required_argument, NULL, 'H' },
		{ "silent-ms", required_argument, NULL, 1000 },
		{ "prepared", required_argument, NULL, 1001 },
		{ "stall-ms", required_argument, NULL, 1002 },
		{ "srq", required_argument, NULL, 1003 },
		{ "rekey-interval", required_argument, NULL, 1004 },
		{ "alarm-threshold", required_argument, NULL, 1005 },
		{ "on-alarm", required_argument, NULL, 1006 },
		{ "qpn-spread", required_argument, NULL, 1007 },
		{ "dev", required_argument, NULL, 'd' },
		{ "ib-port", required_argument, NULL, 'i' },
		{ "gid-index", required_argument, NULL, 'g' },
		{ "buf-size", required_argument, NULL, 's' },
		{ "handshake-timeout", required_argument, NULL, 't' },
		{ "timeout", required_argument, NULL, 't' },
		{ "peer-timeout", required_argument, NULL, 'T' },
		{ "crl", required_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "psn-mode", required_argument, NULL, 'P' },
		{ "seal", optional_argument, NULL, 'E' },
		{ "no-resumption", no_argument, NULL, 'R' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct tool_opts t;
	unsigned long v;
	int ch;

	tool_opts_init(&t, prog);
	while ((ch = getopt_long(argc, argv, "p:b:c:k:C:m:H:d:i:g:s:t:T:r:P:E::RvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'b': o->bind_addr = optarg; break;
		case 'm':
			if (!parse_ulong(prog, "--max-clients", optarg, 1, 100000, &v))
				return 2;
			o->max_clients = (unsigned int)v;
			break;
		case 'H':
			if (!parse_ulong(prog, "--max-handshakes", optarg, 1, 10000, &v))
				return 2;
			o->max_handshakes = (unsigned int)v;
			break;
		case 1000:
			if (!parse_ulong(prog, "--silent-ms", optarg, 1, 600000, &v))
				return 2;
			o->silent_ms = (int)v;
			break;
		case 1001:
			if (!parse_ulong(prog, "--prepared", optarg, 0, 1024, &v))
				return 2;
			o->prepared = v ? (int)v : -1;
			break;
		case 1002:
			if (!parse_ulong(prog, "--stall-ms", optarg, 0, 600000, &v))
				return 2;
			o->stall_ms = (int)v;
			break;
		case 1007:
			if (!parse_ulong(prog, "--qpn-spread", optarg, 0, SRDMA_MAX_QPN_SPREAD, &v))
				return 2;
			o->qpn_spread = v ? (int)v : -1;
			break;
		case 1003:
			if (!parse_ulong(prog, "--srq", optarg, SRDMA_SRQ_MIN, SRDMA_SRQ_MAX, &v))
				return 2;
			o->srq_slots = (unsigned int)v;
			break;
		case 1004:
			if (!parse_ulong(prog, "--rekey-interval", optarg, 1, 86400, &v))
				return 2;
			o->rekey_interval_ms = (int)v * 1000;
			break;
		case 1005:
			if (!parse_ulong(prog, "--alarm-threshold", optarg, 0, 100000000, &v))
				return 2;
			the_watch.threshold = (unsigned int)v;
			break;
		case 1006:
			the_watch.action_given = true;
			if (!strcmp(optarg, "rekey")) {
				the_watch.action = ALARM_REKEY;
			} else if (!strcmp(optarg, "close")) {
				the_watch.action = ALARM_CLOSE;
			} else if (!strcmp(optarg, "log")) {
				the_watch.action = ALARM_LOG;
			} else {
				fprintf(stderr, "%s: --on-alarm: '%s' is not rekey, close or log\n",
					prog, optarg);
				return 2;
			}
			break;
		case 'R': o->no_resumption = 1; break;
		case 'V': printf("srdma-server %s\n", srdma_version()); exit(0);
		case 'h': usage(stdout); exit(0);
		default:
			if (!tool_opt_or_usage(&t, ch, optarg))
				return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", prog,
			argv[optind], prog);
		return 2;
	}
	tool_server_opts(&t, o);
	/* Every post fetches srdma_conn_qp(), so a rekey may move it; shared
	 * mode cannot rekey. */
	o->rekey = o->srq_slots == 0;
	verbose = t.verbose;
	/* Shared mode cannot rekey: its alarm only logs, unless told more. */
	if (o->srq_slots && the_watch.action == ALARM_REKEY) {
		if (the_watch.action_given) {
			fprintf(stderr, "%s: --on-alarm rekey: shared mode (--srq) cannot rekey; "
				"use close or log\n", prog);
			return 2;
		}
		the_watch.action = ALARM_LOG;
	}
	if (!o->cert_file || !o->key_file) {
		fprintf(stderr, "%s: --cert and --key are required\nTry '%s --help'.\n", prog, prog);
		return 2;
	}
	return 0;
}

static void shutdown_all(struct server *s)
{
	for (unsigned int i = 0; i < s->max_clients; i++)
		if (s->slots[i].state == SLOT_ACTIVE)
			close_slot(s, &s->slots[i], 0, "server shutting down");
}

int main(int argc, char **argv)
{
	struct srdma_server_opts o;
	struct server s = { .epfd = -1, .sigfd = -1,
			    .rl_accept = { .what = "accept failed" },
			    .rl_refused = { .what = "refused a connection" },
			    .rl_evicted = { .what = "handshake evicted" },
			    .rl_failed = { .what = "setup failed" } };
	struct srdma_err err;
	sigset_t sigs;
	int rc, status = 1;

	srdma_server_opts_init(&o);
	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc;
	s.max_clients = o.max_clients ? o.max_clients : SRDMA_DEFAULT_MAX_CLIENTS;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGUSR1);
	/* Blocked here; read from the signalfd in the loop. */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	fit_nofile(&s, o.max_handshakes ? o.max_handshakes : SRDMA_DEFAULT_MAX_HANDSHAKES,
		   o.prepared);

	s.slots = calloc(s.max_clients, sizeof(*s.slots));
	s.ready = calloc(s.max_clients, sizeof(*s.ready));
	if (!s.slots || !s.ready) {
		fprintf(stderr, "%s: out of memory\n", prog);
		goto out;
	}
	if (srdma_listen(&o, &s.l, &err)) {
		fprintf(stderr, "%s: %s failed: %s\n", prog, err.step, err.msg);
		goto out;
	}
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	s.sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	s.shared = o.srq_slots > 0;
	if (s.shared)
		hold_max = o.rdma.send_depth ? o.rdma.send_depth : SRDMA_SHARED_SEND_DEPTH;
	if (s.epfd < 0 || s.sigfd < 0 || !watch(&s, srdma_listener_fd(s.l), EV_LISTEN) ||
	    !watch(&s, s.sigfd, EV_SIGNAL) ||
	    (s.shared && !watch(&s, srdma_listener_wc_fd(s.l), EV_WC))) {
		fprintf(stderr, "%s: event setup failed: %s\n", prog, strerror(errno));
		goto out;
	}
	read_counters(s.l, counters_at_start);
	s.watch = &the_watch;
	memcpy(the_watch.seq, counters_at_start, sizeof(the_watch.seq));
	the_watch.rcvd = read_counter(s.l, "rcvd_pkts");
	the_watch.at = now_us();
	the_watch.next = the_watch.at + WATCH_MS * 1000.0;
	logf_("srdma-server %s listening on %s port %u, up to %u clients%s%s%s%s",
	      srdma_version(), o.bind_addr ? o.bind_addr : "all addresses",
	      srdma_listener_port(s.l), s.max_clients,
	      o.client_ca ? ", client certificates required" : "",
	      s.shared ? ", shared receive pool" : "",
	      o.seal ? ", messages sealed with " : "", o.seal ? srdma_seal_name(o.seal) : "");

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
				on_listener(&s);
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
			case EV_WC:
				s.wc_more = true;
				break;
			}
		}
		if (now_us() >= s.next_tick || now_us() >= s.next_scan)
			on_tick(&s);
		serve_ready(&s);
		if (s.wc_more)
			serve_shared(&s);
	}
out:
	if (s.l) {
		shutdown_all(&s);
		if (status == 0)
			log_stats(&s, "at exit");
	}
	if (s.sigfd >= 0)
		close(s.sigfd);
	if (s.epfd >= 0)
		close(s.epfd);
	srdma_listener_free(s.l);
	free(s.slots);
	free(s.ready);
	if (status == 0)
		logf_("stopped");
	return status;

}
