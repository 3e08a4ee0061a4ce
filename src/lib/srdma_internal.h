/* Internal declarations shared by the library's files and its unit tests. */
#ifndef SRDMA_INTERNAL_H
#define SRDMA_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <openssl/ssl.h>
#include <infiniband/verbs.h>

#include "srdma.h"
#include "wire.h"

/* --- errors and time (util.c) --- */

/* Resolve an options value: 0 the default, < 0 never (0 out). */
int srdma_peer_timeout(int opt_ms);
/* TCP keepalive and TCP_USER_TIMEOUT on fd, so the kernel ends a connection
 * to a dead host within timeout_ms (nothing when timeout_ms is 0). */
void srdma_sock_liveness(int fd, int timeout_ms);

__attribute__((format(printf, 4, 5)))
void srdma_set_err(struct srdma_err *e, int code, const char *step,
		   const char *fmt, ...);
/*
 * An options struct as the caller's size says (its first field): copied
 * into dst (the library's own, dst_size bytes), the fields the caller's
 * header did not have left zero. Refused when the size is below min_size
 * (not initialised) or when a field this library does not know is set.
 */
int srdma_opts_take(void *dst, size_t dst_size, size_t min_size, const void *src,
		    const char *what, struct srdma_err *err);
/* The smallest size of each options struct the library takes: the layout
 * of the first release with the size field, which ends with rdma (fields
 * added later come after it and do not move this). A size beyond
 * SRDMA_OPTS_MAX_SIZE is garbage, not a newer header. */
#define SRDMA_SERVER_OPTS_SIZE_V1 \
	(offsetof(struct srdma_server_opts, rdma) + sizeof(struct srdma_rdma_opts))
#define SRDMA_CLIENT_OPTS_SIZE_V1 \
	(offsetof(struct srdma_client_opts, rdma) + sizeof(struct srdma_rdma_opts))
#define SRDMA_OPTS_MAX_SIZE 4096

/* Checks shared by both sides' options (buffer size range). */
int srdma_check_rdma_opts(const struct srdma_rdma_opts *o, struct srdma_err *err);
/* An options struct's seal field: an enum srdma_seal_cipher. */
int srdma_check_seal(int seal, struct srdma_err *err);
/* Monotonic milliseconds. */
int64_t srdma_now_ms(void);
/* Monotonic microseconds, and microseconds since t0 (saturated). */
int64_t srdma_now_us(void);
/*
 * A setup thread's report of progress (acceptor.c): while it blocks on its
 * peer (a TLS read or write, a control message, the binding over RDMA) the
 * time it began, else 0, in the word this thread-local points at; NULL on
 * every other thread. The acceptor evicts a setup stalled on its peer.
 */
extern __thread int64_t *srdma_peer_wait;
static inline void srdma_peer_wait_begin(void)
{
	if (srdma_peer_wait)
		__atomic_store_n(srdma_peer_wait, srdma_now_us(), __ATOMIC_RELAXED);
}
static inline void srdma_peer_wait_end(void)
{
	if (srdma_peer_wait)
		__atomic_store_n(srdma_peer_wait, 0, __ATOMIC_RELAXED);
}
uint32_t srdma_us_since(int64_t t0);
/* Milliseconds left until deadline (>= 0); deadline < 0 means none: -1. */
int srdma_ms_left(int64_t deadline);

/*
 * A library must not kill its caller with SIGPIPE when a peer has gone:
 * OpenSSL writes with write(2). Around every SSL call that may write, SIGPIPE
 * is blocked in the calling thread, and one raised by the call is consumed.
 */
struct srdma_sigpipe_guard {
	sigset_t old;
	bool was_pending;
};
void srdma_sigpipe_block(struct srdma_sigpipe_guard *g);
void srdma_sigpipe_unblock(struct srdma_sigpipe_guard *g);

/* --- PSN (psn.c) --- */

/*
 * A source of random bytes with getrandom(2)'s contract: returns the number
 * of bytes written (possibly fewer than asked) or -1 with errno set.
 */
typedef ssize_t (*srdma_random_fn)(void *buf, size_t len, unsigned int flags);

/* srdma_psn_generate() with the random source made explicit (tests use it). */
int srdma_psn_from_source(uint32_t *psn, srdma_random_fn source);
struct srdma_conn;
/* Exporter mode: both PSNs from the TLS session (client's, then server's). */
int srdma_psn_from_exporter(struct srdma_conn *c, uint32_t *own, uint32_t *peer,
			    struct srdma_err *err);

/* --- TLS (tls.c) --- */

/* TLS 1.2 AEAD suites with forward secrecy; TLS 1.3 suites are all AEAD. */
#define SRDMA_TLS12_CIPHERS                                                     \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"           \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"           \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

int srdma_tls_server_ctx(SSL_CTX **out, const char *cert, const char *key,
			 const char *client_ca, bool tickets, struct srdma_err *err);
int srdma_tls_client_ctx(SSL_CTX **out, const char *ca, const char *cert,
			 const char *key, struct srdma_err *err);
/* Check the peer's chain against the CRLs in file (PEM); every CA in the
 * chain needs its CRL there. */
int srdma_tls_load_crl(SSL_CTX *ctx, const char *file, struct srdma_err *err);
/* Session tickets (server, tickets on): TLS 1.3 only, sealed with a key
 * replaced every period; the one before still opens tickets for a period. */
#define SRDMA_TICKET_PERIOD_S 3600
/* Replace the ticket key now (what the period does; tests call it). */
int srdma_tls_rotate_ticket_key(SSL_CTX *ctx);
/* A client SSL on fd that verifies the peer against name (DNS name or IP);
 * fd -1: no socket yet (see srdma_tls_client_first_flight()). */
int srdma_tls_client_ssl(SSL_CTX *ctx, int fd, const char *name, SSL **out,
			 struct srdma_err *err);
/*
 * The client's first flight (ClientHello, its key share made) written into
 * memory before the TCP connection exists, on an SSL made with fd -1; then
 * srdma_tls_client_attach() sends it on fd, first thing after connect, and
 * moves the SSL onto fd for the rest of the handshake. So a busy client
 * speaks at once once connected: the server tells a silent connection
 * from a real one by its first bytes (acceptor.c).
 */
int srdma_tls_client_first_flight(SSL *ssl, struct srdma_err *err);
int srdma_tls_client_attach(SSL *ssl, int fd, int64_t deadline, struct srdma_err *err);
/* Client session resumption: each new session ticket on a client SSL is
 * handed to cb(arg, session) (which takes the reference) while an owner is
 * set with srdma_tls_set_ticket_sink(); NULL cb stops it. */
typedef void (*srdma_ticket_fn)(void *arg, SSL_SESSION *sess);
void srdma_tls_client_enable_tickets(SSL_CTX *ctx);
int srdma_tls_set_ticket_sink(SSL *ssl, srdma_ticket_fn cb, void *arg);
/* Handshake on a non-blocking socket within the deadline. */
int srdma_tls_handshake(SSL *ssl, bool server, int64_t deadline,
			struct srdma_err *err);
/* Exactly n bytes, or an error: -ETIMEDOUT, -ECONNRESET (peer closed). */
int srdma_tls_read(SSL *ssl, void *buf, size_t n, int64_t deadline,
		   struct srdma_err *err);
int srdma_tls_write(SSL *ssl, const void *buf, size_t n, int64_t deadline,
		    struct srdma_err *err);
/* The OpenSSL error queue's reason (and the verify result), then cleared. */
void srdma_tls_reason(SSL *ssl, char *buf, size_t len);

/* --- verbs (verbs.c) --- */

struct srdma_dev {
	struct ibv_context *ctx;
	uint8_t port;
	struct ibv_port_attr port_attr;
	int gid_index;
	union ibv_gid gid;
	bool roce;	/* Ethernet link layer: GRH with the GID; else LID */
	char name[64];
};

int srdma_dev_open(struct srdma_dev *d, const struct srdma_rdma_opts *o,
		   struct srdma_err *err);
void srdma_dev_close(struct srdma_dev *d);

/* What every connection of a listener or client is made with: its
 * srdma_rdma_opts with the defaults filled in. */
struct srdma_qp_shape {
	size_t buf_size;		/* bytes per slot and of the window */
	unsigned int send_depth;	/* send queue entries */
	uint32_t max_inline;		/* inline bytes asked of the QP */
	enum srdma_psn_mode psn_mode;
	enum srdma_seal_cipher seal;	/* SRDMA_SEAL_OFF: none */
	int rekey_ms;			/* rekey_interval_ms (0: off) */
	bool rekey;			/* opted in to rekeying (or rekey_ms) */
	struct srdma_shared *sh;	/* shared mode (server): the listener's */
};
void srdma_qp_shape_from_opts(struct srdma_qp_shape *s, const struct srdma_rdma_opts *o);

/*
 * A rekey in flight (rekey.c; docs/PROTOCOL.md, "Rekeying"). The send side
 * and the receive side each move from the old QP to the new one at their
 * own point: ours when we post our marker (the last message on the old
 * QP), the peer's when its marker arrives. Until the peer's marker, the
 * new QP's receives are held back so that nothing overtakes the old
 * stream; once both have moved, our marker has completed and the peer
 * has said (DONE) that its marker has too, the old QP is failed, its
 * posted receives come back flushed and go up on the new QP, and it is
 * destroyed.
 */
#define SRDMA_REKEY_TIMEOUT_MS SRDMA_REKEY_MAX_MS	/* a rekey in flight ends by then */
struct srdma_rekey {
	int state;			/* enum rk_state (rekey.c); 0: none */
	bool peer_can;			/* the peer's HELLO set SRDMA_CAP_REKEY */
	bool offered_by_us;
	struct ibv_qp *qp_new, *qp_old;
	struct ibv_qp *rx_qp;		/* receives go here (NULL: c->qp) */
	struct srdma_params local, remote;	/* the new QP's */
	uint32_t epoch;			/* current (0 from setup); +1 in flight */
	uint32_t tx_token, rx_token;	/* this rekey's markers (immediates) */
	bool tx_switched, rx_switched, marker_posted, marker_done, old_failed;
	bool done_sent, peer_done;	/* REKEY DONE: ours out, the peer's in */
	uint32_t on_old;		/* receive slots still posted on qp_old */
	/* The peer's next OFFER, come while we still retire the old QP (its
	 * side finished first): answered once we have. */
	bool offer_queued;
	struct srdma_rekey_msg queued;
	unsigned long long stray;	/* receives on qp_old after the peer's
					 * marker: never the peer's, dropped */
	bool failed;			/* a step in a poll failed: end it */
	uint8_t key_tx[32], key_rx[32];	/* the next epoch's seal keys */
	int64_t deadline_ms;		/* the rekey in flight must end by then */
	int interval_ms;		/* 0: only when asked */
	int64_t due_ms;			/* the next one by interval */
	unsigned long long done;
};

struct srdma_conn {
	int fd;
	SSL *ssl;
	bool server;
	struct srdma_dev *dev;
	struct srdma_client *client;	/* client side: holds a reference */
	struct srdma_listener *listener; /* server side: holds a reference */
	bool counted;		/* handed over: counts against max_clients */
	struct srdma_qp_shape shape;	/* max_inline: then what the QP took */
	uint32_t exporter_peer_psn;	/* exporter mode: the peer's, derived */
	int64_t t_start;		/* setup began (srdma_now_us) */

	struct ibv_pd *pd;
	struct ibv_comp_channel *channel;
	struct ibv_cq *send_cq, *recv_cq;
	struct ibv_qp *qp;
	struct srdma_buf send_buf, recv_buf, window;
	struct ibv_mr *send_mr, *recv_mr, *window_mr;
	uint64_t window_iova;	/* the window's first byte as the peer names it */

	struct srdma_params local, remote;
	struct srdma_conn_info info;

	/* Shared mode (shape.sh set; shared.c): the window's memory window;
	 * receives taken from the pool and not yet given to the program (a
	 * FIFO of slots linked through sh->next; SRDMA_NO_SLOT: none); handed
	 * over to the program; on sh's ready list (completions to give). */
	struct ibv_mw *mw;
	unsigned int bind_slot;		/* the client's binding message's */
	uint32_t q_head, q_tail;
	bool handed, in_ready, send_dirty;
	unsigned int sh_held;		/* slots queued or given: owner == c */
	bool overrun, overrun_told;	/* broke the pool's rules (shared.c) */
	struct srdma_conn *ready_next;
	void *user;			/* srdma_conn_set_context() */
	struct srdma_seal *seal;	/* sealed messages, else NULL */
	uint32_t rx_posted;		/* own receive slots posted (bit per slot) */
	struct srdma_rekey rk;		/* rekeying (rekey.c) */

	/* Partial control message read by srdma_conn_poll_ctrl(). */
	uint8_t ctrl_buf[SRDMA_WIRE_MAX_MSG];
	size_t ctrl_have;

	/* Liveness (srdma_conn_poll_ctrl): when the peer last sent a control
	 * message, when our unanswered PING left (0: none out), and after how
	 * long without a word the peer counts as dead (0: never). */
	int peer_timeout_ms;
	bool peer_pings;		/* its HELLO offered SRDMA_CAP_PING */
	bool peer_window;		/* its HELLO offered SRDMA_CAP_WRITE_WINDOW */
	bool established;		/* setup done: liveness runs */
	int64_t last_heard_ms;
	int64_t ping_sent_ms;
	/* Once the channel has ended, every later poll reports the same. */
	int end_rc;			/* 0: not ended */
	struct srdma_err end_err;
};

/* PD, channel, CQs, QP (RESET -> INIT), buffers; receives posted. */
int srdma_verbs_create(struct srdma_conn *c, bool with_window,
		       struct srdma_err *err);
/* Fill c->local from the QP, the port and a fresh PSN. */
int srdma_verbs_local_params(struct srdma_conn *c, struct srdma_err *err);
/* INIT -> RTR (rq_psn = peer's PSN) -> RTS (sq_psn = ours), then check. */
int srdma_verbs_connect(struct srdma_conn *c, struct srdma_err *err);
void srdma_verbs_destroy(struct srdma_conn *c);
/*
 * During setup: the next completion from cq (one of c's) before the
 * deadline, the control channel watched meanwhile (a peer that refuses says
 * so there, one that leaves closes it: either is known at once). 1 with *wc
 * filled; negative with err filled (step names the setup step; late is the
 * message for -ETIMEDOUT). The other CQ may be left unarmed: setup arms
 * both when it ends.
 */
int srdma_conn_wait_cq(struct srdma_conn *c, struct ibv_cq *cq, int64_t deadline,
		       const char *step, const char *late, struct ibv_wc *wc,
		       struct srdma_err *err);

/* --- shared mode (shared.c) --- */

#define SRDMA_NO_SLOT UINT32_MAX
enum srdma_slot_state { SLOT_POSTED = 0, SLOT_QUEUED, SLOT_GIVEN, SLOT_LOST };
/*
 * What the connections of a shared-mode listener share: one PD, one
 * receive pool behind an SRQ, one receive CQ (N entries: it holds at most
 * one completion per slot, so it can never overflow, whatever a client
 * sends), and one completion channel for it and every connection's own
 * send CQ. Receive completions are routed to their connection by QP
 * number under lock; a connection in setup takes its own (the peer's
 * binding message), the program takes the rest through
 * srdma_listener_poll_wc(). Freed with the listener's last reference.
 */
struct srdma_shared {
	pthread_mutex_t lock;		/* everything below that changes */
	struct ibv_pd *pd;
	struct ibv_srq *srq;
	struct ibv_comp_channel *channel;
	struct ibv_cq *rcq;
	struct ibv_mr *pool_mr;
	struct srdma_buf pool;		/* slots * buf_size bytes */
	unsigned int slots;
	size_t buf_size;
	struct srdma_conn **owner;	/* per slot: NULL while posted */
	uint8_t *state;			/* per slot: enum srdma_slot_state */
	unsigned long long lost;	/* slots a failed post left out */
	uint32_t *next;			/* per slot: its connection's FIFO */
	struct ibv_wc *wcs;		/* per slot: its completion, queued */
	struct srdma_conn **map;	/* QP number -> connection (open */
	uint32_t *map_qpn;		/* addressing; map_cap a power of 2) */
	unsigned int map_cap, map_len;
	int epfd, evfd;			/* what the program watches */
	struct srdma_conn *ready_head, *ready_tail;
};

int srdma_shared_create(struct srdma_shared **out, struct srdma_dev *d, unsigned int slots,
			size_t buf_size, unsigned int max_conns, struct srdma_err *err);
void srdma_shared_destroy(struct srdma_shared *sh);
/* Route c's QP's receives to c (before RTR). */
int srdma_shared_attach(struct srdma_conn *c, struct srdma_err *err);
/* The program's now: arm its send CQ, give what it already received. */
void srdma_shared_handover(struct srdma_conn *c);
/* Under the lock: the MW, QP and send CQ destroyed, c's slots back in the
 * pool, c forgotten. */
void srdma_shared_detach(struct srdma_conn *c);
/* During setup: c's next receive (1, *wc filled) or 0 when none yet. */
int srdma_shared_take_recv(struct srdma_conn *c, struct ibv_wc *wc);
int srdma_shared_post_recv(struct srdma_conn *c, unsigned int slot);
/* Server, shared mode, QP in RTS: bind c's memory window to its QP and put
 * its rkey and address into c->local. */
int srdma_verbs_bind_window(struct srdma_conn *c, int64_t deadline, struct srdma_err *err);
/* Tests only (never set by the library): 1 exposes a shared-mode window
 * through its MR's own rkey with remote write (no memory window), the
 * design the memory window replaces. Hidden from the shared library's
 * exports. */
extern int srdma_window_fault;
/* Slots one connection may hold (SRDMA_SLOTS); tests raise it to show
 * what one client could do to the pool without the bound. Hidden too. */
extern unsigned int srdma_shared_hold_max;

/* --- sealed messages (seal.c): pure, conn.c binds them to a connection --- */

#define SRDMA_SEAL_KEY_LEN 32
#define SRDMA_SEAL_MAX_EPOCH 0x7fffffffu
struct srdma_seal;
/* A direction pair under one epoch: tx seals (our direction: the server's
 * is 1), rx opens the peer's. */
int srdma_seal_new(struct srdma_seal **out, enum srdma_seal_cipher cipher, bool server,
		   uint32_t epoch, const uint8_t tx_key[SRDMA_SEAL_KEY_LEN],
		   const uint8_t rx_key[SRDMA_SEAL_KEY_LEN]);
void srdma_seal_free(struct srdma_seal *s);
/* Both directions' keys of an epoch, from the TLS exporter. */
int srdma_seal_keys(SSL *ssl, uint32_t epoch, uint8_t c2s[SRDMA_SEAL_KEY_LEN],
		    uint8_t s2c[SRDMA_SEAL_KEY_LEN]);
int srdma_seal_msg(struct srdma_seal *s, uint16_t kind, const void *msg, size_t len,
		   void *out, size_t cap, size_t *out_len);
/* 0, -ENOTCONN (broken before), or -EBADMSG (broken now: see below).
 * cap: the bytes buf holds (a slot, the window); a len beyond it (the
 * peer's word, for a WRITE) is refused, never read. */
int srdma_seal_open(struct srdma_seal *s, void *buf, size_t len, size_t cap, uint16_t *kind,
		    void **msg, size_t *msg_len);
/* Rekeying: one direction moves to epoch's key, its numbers from 0 (the
 * sender's at its switch point, the receiver's at the peer's marker). */
int srdma_seal_rekey_tx(struct srdma_seal *s, uint32_t epoch, const uint8_t key[SRDMA_SEAL_KEY_LEN]);
int srdma_seal_rekey_rx(struct srdma_seal *s, uint32_t epoch, const uint8_t key[SRDMA_SEAL_KEY_LEN]);
/* Why the first open failed, or NULL while none has. */
const char *srdma_seal_broken(const struct srdma_seal *s);
enum srdma_seal_cipher srdma_seal_cipher_of(const struct srdma_seal *s);
/* Messages sealed so far in this epoch. */
uint64_t srdma_seal_sent(struct srdma_seal *s);

/* --- rekeying (rekey.c) --- */

/* A REKEY message from the peer (poll_ctrl): 0, or ends the connection. */
int srdma_rekey_on_msg(struct srdma_conn *c, const struct srdma_rekey_msg *m,
		       struct srdma_err *err);
/* Timers (interval, deadline) and a marker that found the send queue
 * full: 0, or 1 / negative with err (the connection ends). */
int srdma_rekey_tick(struct srdma_conn *c, struct srdma_err *err);
/* ms until srdma_rekey_tick() must run (-1: none). */
int srdma_rekey_timeout_ms(const struct srdma_conn *c);
/* srdma_conn_poll_wc()'s filter over wc[0..n) just polled: keeps (in
 * order, at the front) what is the program's; returns how many. */
int srdma_rekey_filter(struct srdma_conn *c, struct ibv_wc *wc, int n, struct srdma_err *err);
/* Destroy whichever QP a rekey left beside c->qp. */
void srdma_rekey_free(struct srdma_conn *c);

/* verbs.c helpers for it: another QP on c's CQs (INIT, no receives), one
 * taken to RTR/RTS with these parameters and verified, a receive on it. */
int srdma_verbs_another_qp(struct srdma_conn *c, struct ibv_qp **out, struct srdma_err *err);
int srdma_verbs_connect_qp(struct srdma_conn *c, struct ibv_qp *qp,
			   const struct srdma_params *local, const struct srdma_params *remote,
			   struct srdma_err *err);
int srdma_verbs_post_recv_on(struct srdma_conn *c, struct ibv_qp *qp, unsigned int slot);
int srdma_psn_from_exporter_epoch(struct srdma_conn *c, uint32_t epoch, uint32_t *own,
				  uint32_t *peer, struct srdma_err *err);

/* --- peer binding (binding.c): the message, made and checked --- */

/* "SRB1" + HMAC-SHA256 (binding.c says of what). */
#define SRDMA_BINDING_LEN (4 + 32)
/* The binding message this side sends. */
int srdma_binding_make(SSL *ssl, bool server, const struct srdma_params *local,
		       const struct srdma_params *remote, uint8_t out[SRDMA_BINDING_LEN],
		       struct srdma_err *err);
/* Whether got (len bytes) is the peer's binding message: 0, or -EACCES. */
int srdma_binding_check(SSL *ssl, bool server, const struct srdma_params *local,
			const struct srdma_params *remote, const uint8_t *got, size_t len,
			struct srdma_err *err);
/* Tests only (never set by the library): 1 sends a wrong MAC, 2 sends
 * plain data instead of the binding message, 3 closes the connection in
 * its place. Hidden from the shared library's exports. */
extern int srdma_binding_fault;

/* --- handshake and control channel (conn.c) --- */

int srdma_ctrl_send(struct srdma_conn *c, const struct srdma_msg *m,
		    int64_t deadline, struct srdma_err *err);
int srdma_ctrl_send_error(struct srdma_conn *c, uint16_t code,
			  const char *text, int64_t deadline);
/* Receive one message; an invalid one is answered with ERROR(bad message). */
int srdma_ctrl_recv(struct srdma_conn *c, struct srdma_msg *m,
		    int64_t deadline, struct srdma_err *err);
/* --- the listener and its acceptor (server.c, acceptor.c) --- */

struct srdma_pending;
struct srdma_reject;

/* Prepared QPs (pool.c): a thread keeps up to len sets ready. */
struct srdma_pool {
	bool inited, running, stop;
	pthread_t thread;
	pthread_mutex_t lock;		/* guards the rest */
	pthread_cond_t cond;		/* one taken, or stop */
	struct srdma_conn **set;	/* verbs made, nothing else */
	unsigned int len, have;
	unsigned long long taken;
	unsigned int spread_bits;	/* QPN spread (pool.c); 0: none */
	unsigned long long burnt;	/* throwaway QPs made so far */
};

struct srdma_listener {
	SSL_CTX *ctx;
	int fd;
	uint16_t port;
	int handshake_ms;
	int peer_timeout_ms;	/* resolved: 0 never */
	struct srdma_qp_shape shape;
	struct srdma_dev dev;
	/* The device and TLS context outlive the listener while connections
	 * made by it live: one reference for the listener, one for each
	 * connection object (atomic). */
	int refs;

	/* The acceptor. epfd (what the caller watches) holds the listening
	 * socket, evfd (a setup thread finished) and timerfd (the listener's
	 * rest after EMFILE is over, or a silent setup may now be evicted). */
	int epfd, evfd, timerfd;
	bool watching;			/* the listening socket is in epfd */
	bool paused;			/* resting after EMFILE (timerfd) */
	bool room_wait;			/* no setup record free, or
					 * max_handshakes run and none can be
					 * evicted yet (timerfd, evfd end it) */
	unsigned int max_clients, max_handshakes;
	int silent_ms, stall_ms;
	unsigned int clients;		/* atomic: handed over, not closed */
	unsigned int next_id;
	pthread_mutex_t lock;		/* pending states set by threads */
	struct srdma_pending *pend;
	unsigned int pend_len;		/* room: evicted setups take a while */
	struct srdma_reject *rejects;	/* SRDMA_MAX_REJECTS */
	struct srdma_event ev;		/* the one get_event last returned */
	struct srdma_shared *shared;	/* shared mode, else NULL */
	struct srdma_listener_stats stats;
	struct srdma_pool pool;
};

/* Start the thread that keeps n QPs prepared (0: none), each after a
 * random skip of QPNs below 2^spread_bits (0: none). */
int srdma_pool_start(struct srdma_listener *l, unsigned int n, struct srdma_err *err);
/* Give c (which has no verbs resources) a prepared set: false if none. */
bool srdma_pool_take(struct srdma_listener *l, struct srdma_conn *c);
unsigned long long srdma_pool_taken(struct srdma_listener *l);
/* Stop the thread and free what is prepared (after every setup ended). */
void srdma_pool_stop(struct srdma_listener *l);

/* accept(2) one TCP connection (-EAGAIN: none waiting), options set. */
int srdma_accept_fd(struct srdma_listener *l, int *fd, char *addr, size_t addr_len,
		    struct srdma_err *err);
/* The whole setup on an accepted socket (fd taken), within the deadline. */
int srdma_server_handshake(struct srdma_listener *l, int fd,
			   struct srdma_conn **out, struct srdma_err *err);
/* Complete TLS on fd, send ERROR(code, text), linger, close fd. */
void srdma_server_reject(struct srdma_listener *l, int fd, uint16_t code,
			 const char *text);
/* Set up the acceptor's descriptors and tables (srdma_listen). */
int srdma_acceptor_init(struct srdma_listener *l, const struct srdma_server_opts *o,
			struct srdma_err *err);
/* End setups and refusals in flight and join their threads. */
void srdma_acceptor_stop(struct srdma_listener *l);
void srdma_listener_ref(struct srdma_listener *l);
struct srdma_client;
/* Drop a reference to a client: the last one frees it. */
void srdma_client_unref(struct srdma_client *cl);
/* Drop a reference: the last one frees the device and TLS context. */
void srdma_listener_unref(struct srdma_listener *l);
/* "192.0.2.1:40000" or "[2001:db8::1]:40000" (IPv4-mapped shown as IPv4). */
void srdma_format_addr(const struct sockaddr *sa, char *buf, size_t len);
/* Start a thread with every signal blocked, on a SRDMA_THREAD_STACK stack. */
#define SRDMA_THREAD_STACK (1u << 20)
int srdma_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* A server connection object around an accepted socket, TLS done (fd is
 * taken, and closed on failure). */
int srdma_server_start_tls(struct srdma_listener *l, int fd, int64_t deadline,
			   struct srdma_conn **out, struct srdma_err *err);
/* The binding messages over the QP (the client first, the server once it
 * has verified the client's). */
int srdma_binding_exchange(struct srdma_conn *c, int64_t deadline,
			   struct srdma_err *err);
/* The parameter exchange after TLS, either side. */
int srdma_conn_setup(struct srdma_conn *c, int64_t deadline,
		     struct srdma_err *err);
void srdma_conn_fill_tls_info(struct srdma_conn *c);
void srdma_conn_free(struct srdma_conn *c);
/* Server side, after an ERROR: close_notify, then read what the peer still
 * sends (up to ms) before closing, so the kernel ends with FIN, not an RST
 * that could destroy the ERROR before the peer reads it. Then free. */
void srdma_conn_linger_free(struct srdma_conn *c, int ms);

#endif
