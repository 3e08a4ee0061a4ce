/*
 * srdma: a secure bootstrap for RDMA reliable connections.
 *
 * Two peers meet over TLS, exchange cryptographically random 24-bit packet
 * sequence numbers (PSNs) and every queue-pair parameter over that channel,
 * then each brings its RC queue pair up with raw IB verbs
 * (RESET -> INIT -> RTR -> RTS) and checks the result with ibv_query_qp.
 * This header is the whole public API; examples/ holds a complete server
 * and client written from it alone.
 *
 * Errors: functions that can fail return 0 (or a count) on success and a
 * negative errno value on failure, fill a struct srdma_err (which step
 * failed and why) when given one, and leave nothing half-made behind. A
 * setup the peer refused returns -ECONNREFUSED with err->peer_code set
 * (enum srdma_error_code, e.g. SRDMA_ERROR_SERVER_FULL). A certificate,
 * key, CA or CRL file that cannot be used is -EINVAL, err->msg saying why
 * (OpenSSL's reason, "No such file or directory" among them). Verbs calls
 * made on what srdma hands out (ibv_post_send(), ...) keep verbs' own
 * convention: a positive errno.
 *
 * Threads: any function may be called from any thread. Calls on different
 * objects never need a lock between them. Calls on one object (a listener,
 * a client, a connection) must not overlap, with one exception:
 * srdma_client_connect() may run on one client from many threads at once.
 * Threads the library starts block every signal; the library installs no
 * signal handler, and SIGPIPE from its writes is blocked and consumed.
 *
 * Ownership and lifetimes:
 *  - What srdma_listen(), srdma_client_new(), srdma_connect() and the
 *    acceptor hand out is the caller's, freed with srdma_listener_free(),
 *    srdma_client_free() and srdma_conn_close().
 *  - A connection may outlive the listener or client that made it: the
 *    device and TLS context they share are released with the last user.
 *  - Strings in options structs are used during the call only.
 *  - Pointers a connection hands out (srdma_conn_info(), its buffers, QP,
 *    completion channel) are valid until srdma_conn_close(), the QP with
 *    one exception: on a connection that rekeys (the rekey option on both
 *    sides, off by default), a rekey replaces it ("Rekeying" below). Post work
 *    requests on the QP; take completions with srdma_conn_poll_wc() or
 *    srdma_conn_next_wc() only (they acknowledge and re-arm the completion
 *    channel); never modify or destroy the QP, CQs or channel yourself.
 *    Memory you register on its PD (qp->pd) is yours to deregister before
 *    srdma_conn_close().
 *
 * Blocking: srdma_listener_get_event(), srdma_conn_poll_wc(),
 * srdma_conn_poll_ctrl(), srdma_conn_post_recv(), srdma_conn_close() and
 * the accessors never block. srdma_accept() and srdma_conn_next_wc() block
 * up to their timeout_ms; srdma_connect() and srdma_client_connect() up to
 * handshake_ms (name lookup aside); srdma_listen() and srdma_client_new()
 * while they load files and open the device; srdma_listener_free() until
 * its setup threads end (they are cut short: a moment) and its QP pool's
 * thread has finished the set it is making.
 *
 * A minimal server (examples/echo-server.c is a complete one):
 *
 *	struct srdma_server_opts so;
 *	struct srdma_listener *l;
 *	struct srdma_conn *c;
 *	struct srdma_err err;
 *
 *	srdma_server_opts_init(&so);
 *	so.cert_file = "server.pem";
 *	so.key_file = "server.key";
 *	if (srdma_listen(&so, &l, &err) == 0)
 *		while (srdma_accept(l, -1, &c, &err) == 0)
 *			... srdma_conn_qp(c) is in RTS, connected to a client;
 *			    serve it, then srdma_conn_close(c, 0, NULL) ...
 *
 * and a client: srdma_client_opts_init(&co), co.ca_file = "ca.pem", then
 * srdma_connect(&co, "server.example", &c, &err).
 */
#ifndef SRDMA_H
#define SRDMA_H

#include <stddef.h>
#include <stdint.h>
#include <infiniband/verbs.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SRDMA_API __attribute__((visibility("default")))
#else
#define SRDMA_API
#endif

/* A PSN is 24 bits wide (InfiniBand BTH); every value is valid. */
#define SRDMA_PSN_BITS 24
#define SRDMA_PSN_MASK 0xffffffu

#define SRDMA_DEFAULT_PORT 4433
#define SRDMA_DEFAULT_MAX_CLIENTS 10
#define SRDMA_DEFAULT_BUF_SIZE 4096
#define SRDMA_DEFAULT_HANDSHAKE_MS 10000
#define SRDMA_DEFAULT_MAX_HANDSHAKES 64
/* A setup whose client has not sent a byte for this long may be evicted
 * to make room for another (see srdma_server_opts.silent_ms). */
#define SRDMA_DEFAULT_SILENT_MS 1000
/* QPs a listener keeps prepared (see srdma_server_opts.prepared). */
#define SRDMA_DEFAULT_PREPARED 4
/* Bits of QPN spread (srdma_server_opts.qpn_spread): the default, the most. */
#define SRDMA_DEFAULT_QPN_SPREAD 4
#define SRDMA_MAX_QPN_SPREAD 12
/* A connected peer that says nothing for this long, a liveness probe
 * unanswered, is declared dead (see srdma_conn_poll_ctrl()). */
#define SRDMA_DEFAULT_PEER_TIMEOUT_MS 180000
/* Largest --buf-size: one message slot and the RDMA write window. */
#define SRDMA_MAX_BUF_SIZE (1u << 30)
/* Receive (and send) slots per connection. */
#define SRDMA_SLOTS 16
/* Largest send queue (srdma_rdma_opts.send_depth). */
#define SRDMA_MAX_SEND_DEPTH 4096
/* Largest inline request (srdma_rdma_opts.max_inline). */
#define SRDMA_MAX_INLINE 4096
/* Shared receive pool sizes (srdma_server_opts.srq_slots). */
#define SRDMA_SRQ_MIN 16
#define SRDMA_SRQ_MAX 65536
/* Send queue entries of a shared-mode connection when send_depth is 0. */
#define SRDMA_SHARED_SEND_DEPTH 7

/* The codes an ERROR message carries (docs/PROTOCOL.md): what a peer that
 * refuses or ends a connection says why with (struct srdma_err's peer_code),
 * and what srdma_conn_close() can tell the peer. srdma_error_name() names
 * them. */
enum srdma_error_code {
	SRDMA_ERROR_SERVER_FULL = 1,	/* at its client cap */
	SRDMA_ERROR_VERSION = 2,	/* protocol version mismatch */
	SRDMA_ERROR_BAD_MESSAGE = 3,	/* an invalid message (or reply) arrived */
	SRDMA_ERROR_TIMEOUT = 4,	/* the handshake took too long */
	SRDMA_ERROR_RDMA_SETUP = 5,	/* QP or memory setup failed on the sender */
	SRDMA_ERROR_INTERNAL = 6,	/* a local failure on the sender */
	SRDMA_ERROR_UNEXPECTED = 7,	/* a valid message at the wrong time */
	SRDMA_ERROR_SHUTDOWN = 8,	/* the server is stopping */
	SRDMA_ERROR_BINDING = 9,	/* the peer binding did not verify */
	SRDMA_ERROR_PSN_MODE = 10,	/* the two sides' PSN modes differ */
	SRDMA_ERROR_QP = 11,		/* the sender's QP failed after setup */
	SRDMA_ERROR_NOT_RESPONDING = 12, /* the peer left a liveness probe unanswered */
	SRDMA_ERROR_SEAL_MODE = 13,	/* the two sides' seal modes differ */
	SRDMA_ERROR_SEAL = 14,		/* a sealed message did not open (forged,
					 * replayed, reordered or altered) */
};

/* What failed: step names the operation ("tls handshake", "modify QP to
 * RTR", ...), msg says why (errno text, OpenSSL reason, WC status, or the
 * peer's ERROR message). code is a negative errno. This struct keeps its
 * size in every version (the caller allocates it). */
struct srdma_err {
	int code;
	char step[48];
	char msg[256];
	/* When the peer sent an ERROR message: its code (enum
	 * srdma_error_code, e.g. SRDMA_ERROR_SERVER_FULL), else 0. */
	uint16_t peer_code;
};

/* Where the PSNs come from (both sides must agree, or the handshake fails):
 *  EXCHANGE: each side draws its own from the kernel CSPRNG and sends it to
 *            the peer inside TLS (default).
 *  EXPORTER: both are derived from the TLS session with
 *            SSL_export_keying_material, so no PSN crosses the wire at all
 *            and both sides' randomness feeds them. */
enum srdma_psn_mode { SRDMA_PSN_EXCHANGE = 0, SRDMA_PSN_EXPORTER = 1 };

/* Sealed messages (srdma_*_opts.seal; both sides must name the same, or
 * the handshake fails with SRDMA_ERROR_SEAL_MODE): every message sent over
 * the QP is encrypted and authenticated in software, under keys only the
 * two TLS endpoints hold. See srdma_conn_seal(). */
enum srdma_seal_cipher {
	SRDMA_SEAL_OFF = 0,
	SRDMA_SEAL_AES_256_GCM = 1,
	SRDMA_SEAL_CHACHA20_POLY1305 = 2,
};

/* The RDMA side of either end. Zeroed means all defaults. */
struct srdma_rdma_opts {
	const char *dev_name;	/* NULL: the first device */
	int ib_port;		/* 0: port 1 */
	int gid_index;		/* -1 or unset (see srdma_*_opts_init): automatic,
				 * a RoCE v2 GID holding an IPv4 address, else a
				 * RoCE v2 GID, else index 0 */
	size_t buf_size;	/* 0: SRDMA_DEFAULT_BUF_SIZE; bytes per message
				 * slot and of the server's write window */
	enum srdma_psn_mode psn_mode;
	unsigned int send_depth; /* 0: SRDMA_SLOTS; send queue entries, up to
				 * SRDMA_MAX_SEND_DEPTH (RDMA WRITE pipelines) */
	unsigned int max_inline; /* 0: none; bytes a send may carry inline
				 * (IBV_SEND_INLINE), up to SRDMA_MAX_INLINE;
				 * the QP must take them or setup fails */
};

/*
 * Options structs grow: a later srdma.h may add fields, always at the end.
 * Fill one with its _init() function first (an inline function, compiled
 * into the caller, that zeroes it, records in size how large the caller's
 * struct is, and sets the defaults that are not 0), then set what you need.
 * A library older than the header refuses a field it does not know that
 * was set (-E2BIG), and a newer one reads only the fields a caller's size
 * covers. Zeroed without _init() (size 0), a struct is refused (-EINVAL).
 */
struct srdma_server_opts {
	size_t size;		/* sizeof(struct srdma_server_opts): _init() */
	const char *bind_addr;	/* NULL: every address (IPv6 and IPv4) */
	uint16_t port;		/* 0: an ephemeral port (srdma_listener_port()
				 * says which); srdma_server_opts_init() sets
				 * SRDMA_DEFAULT_PORT */
	const char *cert_file;	/* PEM certificate chain, required */
	const char *key_file;	/* PEM private key, required */
	const char *client_ca;	/* set: require client certificates issued by
				 * this CA (PEM file) */
	unsigned int max_clients; /* 0: 10; connections handed over and not
				 * yet closed; one more is told "server full" */
	unsigned int max_handshakes; /* 0: SRDMA_DEFAULT_MAX_HANDSHAKES; setups
				 * in progress at once; then a silent one is
				 * evicted, or new ones wait (see below) */
	int handshake_ms;	/* 0: 10000; the whole setup's deadline */
	int no_resumption;	/* nonzero: issue no TLS session tickets, so
				 * every client does a full handshake */
	const char *crl_file;	/* set (with client_ca): PEM CRLs; a client
				 * certificate revoked there is refused, and
				 * each CA of its chain needs its CRL here */
	int peer_timeout_ms;	/* 0: SRDMA_DEFAULT_PEER_TIMEOUT_MS; -1: never;
				 * a connected client silent this long (a
				 * probe unanswered) is dead; also sets TCP
				 * keepalive and TCP_USER_TIMEOUT to match */
	struct srdma_rdma_opts rdma;
	/* Added in 0.3. */
	int silent_ms;		/* 0: SRDMA_DEFAULT_SILENT_MS; a setup whose
				 * client has sent no byte at all for this
				 * long may be evicted to make room */
	int stall_ms;		/* 0: off; a setup that has waited this long
				 * on a client that spoke (a TLS read, a
				 * control message, the binding) may be
				 * evicted to make room. Off by default: a
				 * client starved of CPU can stall for seconds
				 * (docs/SECURITY.md); with clients on other
				 * hosts 1000-3000 fits */
	int prepared;		/* 0: SRDMA_DEFAULT_PREPARED; -1: none; up to
				 * 1024 QPs with their buffers (PD, CQs, MRs,
				 * receives posted: each pins 2 * SRDMA_SLOTS + 1
				 * slots) made ahead of need by a library thread,
				 * so that a setup does not wait for them */
	/* Added in 0.4. */
	unsigned int srq_slots;	/* 0: every connection has its own receive
				 * and send slots (the default). N
				 * (SRDMA_SRQ_MIN..SRDMA_SRQ_MAX): shared mode,
				 * for many mostly idle clients: one receive
				 * pool of N slots (a shared receive queue)
				 * for all connections, one completion fd for
				 * all of them (srdma_listener_poll_wc()), no
				 * send slots of their own; each client's
				 * write window stays its own (a memory window
				 * bound to its QP). See "Shared mode" below */
	/* Added in 0.5. */
	int seal;		/* enum srdma_seal_cipher: 0 off; the clients
				 * must ask for the same (srdma_conn_seal()) */
	int rekey_interval_ms;	/* 0: off; move every connection to a fresh QP
				 * (and keys) this often (srdma_conn_rekey());
				 * sets rekey */
	int rekey;		/* nonzero: take part in rekeying (say so in
				 * the HELLO): either side may then replace
				 * the connection's QP, so fetch
				 * srdma_conn_qp() for each post ("Rekeying"
				 * below). 0: the QP lives as long as the
				 * connection; the peer's REKEY is refused */
	int qpn_spread;		/* with prepared QPs: 0: SRDMA_DEFAULT_QPN_SPREAD
				 * bits; -1: none; up to SRDMA_MAX_QPN_SPREAD.
				 * Before each QP it prepares, the pool's
				 * thread makes and destroys a random number
				 * (below 2^bits) of throwaway QPs (about
				 * 2^(bits-1) per connection, at the lowest
				 * priority; each a firmware command on
				 * hardware), and setups
				 * take prepared QPs in random order, so that
				 * on devices that number QPs in sequence
				 * (rxe) a connection's QPN cannot be told
				 * from the one before (docs/SECURITY.md) */
};

struct srdma_client_opts {
	size_t size;		/* sizeof(struct srdma_client_opts): _init() */
	uint16_t port;		/* 0: 4433 */
	const char *ca_file;	/* CA certificate(s), PEM file or a hashed
				 * directory; required: the server is always
				 * verified */
	const char *cert_file;	/* optional client certificate (mutual TLS) */
	const char *key_file;
	const char *server_name; /* name (or IP) the certificate must carry;
				 * NULL: the host dialled */
	int handshake_ms;	/* 0: 10000 */
	int resume;		/* nonzero (srdma_client_connect only): keep the
				 * TLS session ticket each connection receives and
				 * offer it on the next connection to the same
				 * host, port and name, which then skips the
				 * certificate exchange (TLS 1.3 resumption; a
				 * fresh ECDHE key exchange still runs). */
	const char *crl_file;	/* set: PEM CRLs; a server certificate revoked
				 * there is refused (each CA of its chain
				 * needs its CRL here) */
	int peer_timeout_ms;	/* as in srdma_server_opts, for the server */
	struct srdma_rdma_opts rdma;
	/* Added in 0.5. */
	int seal;		/* enum srdma_seal_cipher: as the server's */
	int rekey_interval_ms;	/* as the server's */
	int rekey;		/* as the server's */
};

/* Fill with defaults: the size, port SRDMA_DEFAULT_PORT (on the server,
 * where 0 would ask for an ephemeral port; on the client 0 means it too),
 * gid_index -1 (automatic), everything else 0 (its default). */
static inline void srdma_server_opts_init(struct srdma_server_opts *o)
{
	struct srdma_server_opts zero = { 0 };

	*o = zero;
	o->size = sizeof(*o);
	o->port = SRDMA_DEFAULT_PORT;
	o->rdma.gid_index = -1;
}

static inline void srdma_client_opts_init(struct srdma_client_opts *o)
{
	struct srdma_client_opts zero = { 0 };

	*o = zero;
	o->size = sizeof(*o);
	o->port = SRDMA_DEFAULT_PORT;
	o->rdma.gid_index = -1;
}

struct srdma_listener;
struct srdma_client;
struct srdma_conn;

/* Where one connection's setup spent its time, in microseconds, as this
 * side saw it. params_us is the control messages' own time: HELLO and
 * PARAMS, waits for the peer included. */
struct srdma_setup_times {
	uint32_t tcp_us;	/* TCP connect (client; 0 on the server) */
	uint32_t tls_us;	/* TLS handshake (the client writes its
				 * ClientHello before it dials: included) */
	uint32_t params_us;	/* HELLO, PARAMS exchange */
	uint32_t qp_create_us;	/* PD, CQs, MRs, QP to INIT, receives, PSN;
				 * the client makes its QP after sending its
				 * ClientHello, so the server's answer is on
				 * its way meanwhile (not counted in tls_us);
				 * a server taking a prepared QP spends only
				 * the PSN here */
	uint32_t qp_connect_us;	/* INIT -> RTR -> RTS and ibv_query_qp check */
	uint32_t binding_us;	/* the binding exchange over RDMA */
	uint32_t total_us;	/* start to finish (the parts may overlap) */
};

/* A connection's negotiated state, fixed once it is up. */
struct srdma_conn_info {
	uint32_t local_qpn, remote_qpn;
	uint32_t local_psn, remote_psn;	/* secret: log only when asked */
	enum srdma_psn_mode psn_mode;
	enum ibv_mtu path_mtu;
	int gid_index;
	char dev_name[64];
	char peer_addr[64];		/* "192.0.2.1:40000" or "[2001:db8::1]:40000"
					 * (an IPv4 peer of a dual-stack socket
					 * shown as IPv4) */
	char tls_version[16];		/* "TLSv1.3" */
	char tls_cipher[64];
	char peer_cert_subject[128];	/* "/CN=client.example" (OpenSSL's one-line
					 * form); "" when the peer sent none */
	int tls_resumed;		/* 1: an abbreviated (resumed) handshake */
	struct srdma_setup_times times;
	/* The peer's RDMA write window (len 0: none). Secret. The address
	 * is where RDMA WRITEs aim: 0 for the window's first byte when the
	 * peer's device registers it zero-based (srdma asks for that, so the
	 * peer's virtual addresses stay its own), else its virtual address. */
	uint64_t remote_addr;
	uint32_t remote_rkey;
	uint32_t remote_len;
	/* Added in 0.5 (the library allocates this struct: it may grow). */
	int seal;			/* enum srdma_seal_cipher in use */
	uint32_t epoch;			/* rekeys done so far (srdma_conn_rekey()):
					 * the QPNs and PSNs above are the
					 * current QP's; the seal keys' epoch */
};

/* A registered buffer. */
struct srdma_buf {
	void *addr;
	size_t len;
	uint32_t lkey;
	uint32_t rkey;
};

SRDMA_API const char *srdma_version(void);

/*
 * Draw a PSN uniformly from all 2^24 values, from the kernel's CSPRNG
 * (getrandom(2)). On failure returns a negative errno and leaves *psn
 * untouched: there is no time- or pid-based fallback, so a caller that cannot
 * get a PSN must refuse the connection.
 */
SRDMA_API int srdma_psn_generate(uint32_t *psn);

/* --- server side --- */

/*
 * A listener is an acceptor: it owns the listening socket, TLS, every
 * client's setup and admission control, and reports what happened as events
 * on one file descriptor that the caller's own event loop watches (the
 * shape of librdmacm's event channel):
 *
 *   - Each accepted TCP connection is set up (TLS, HELLO, PARAMS, QP to RTS
 *     and verified, peer binding) on a thread of the library's, never the
 *     caller's, within handshake_ms. Library threads block every signal.
 *   - At most max_handshakes setups run at once. When they all run, room
 *     for one more is made only by evicting a setup that is not making
 *     progress: first one whose client has not sent a single byte (the
 *     kernel's count, TCP_INFO) for silent_ms, the longest silent first;
 *     then one whose thread has been blocked on a client that spoke (a TLS
 *     read, a control message, the binding) for stall_ms, the longest
 *     first (only when stall_ms is set). A setup that is working, or
 *     whose client is waiting on the server, is never evicted; when none
 *     can go, new connections wait in the kernel's accept queue (backlog
 *     SOMAXCONN) until a setup ends or one stops long enough. So a flood
 *     of connections that never speak holds each setup for silent_ms (and
 *     one that speaks and stops for stall_ms, or handshake_ms when it is
 *     off), and a storm of real clients is slowed, never cut off: they are
 *     served in arrival order (see docs/SECURITY.md).
 *   - At most max_clients connections are handed over and not yet closed;
 *     one more is told "server full" (SRDMA_ERROR_SERVER_FULL) over TLS, the
 *     refusal lingered so that the message arrives, and closed.
 *   - When accept(2) runs out of descriptors the listener rests for
 *     SRDMA_LISTEN_PAUSE_MS instead of spinning.
 */
#define SRDMA_LISTEN_PAUSE_MS 250
/* Refusals told over TLS at once; beyond them a refused connection is
 * closed without a word. */
#define SRDMA_MAX_REJECTS 8

/* Load the certificate and key, open the RDMA device, and listen. */
SRDMA_API int srdma_listen(const struct srdma_server_opts *o,
			   struct srdma_listener **out, struct srdma_err *err);

enum srdma_event_type {
	/* A client is set up and verified: ev->conn is the caller's now,
	 * until srdma_conn_close(); it counts against max_clients from the
	 * moment this event is returned until then. */
	SRDMA_EVENT_CONNECTED = 1,
	/* A client was told "server full" and closed (ev->err: code -EBUSY,
	 * msg says more). A refusal costs a TLS handshake, on a library
	 * thread (no QP), or, with SRDMA_MAX_REJECTS such in flight, is a
	 * close without a word. A setup that finishes while the cap is full
	 * (setups run beside the clients) is refused after it: its QP is
	 * closed with the ERROR. */
	SRDMA_EVENT_REFUSED = 2,
	/* A client's setup failed: ev->err says at which step and why;
	 * err.code -ETIMEDOUT: it missed handshake_ms; -ECANCELED: evicted
	 * to make room (max_handshakes; its client had been silent for
	 * silent_ms); err.peer_code: the client sent ERROR. */
	SRDMA_EVENT_FAILED = 3,
	/* accept(2) failed (ev->err); out of descriptors or memory, the
	 * listener rests SRDMA_LISTEN_PAUSE_MS first. */
	SRDMA_EVENT_ACCEPT_ERROR = 4,
};

struct srdma_event {
	enum srdma_event_type type;
	unsigned int id;		/* connection number, from 1, given in
					 * accept order (0 for ACCEPT_ERROR);
					 * events come as setups finish */
	struct srdma_conn *conn;	/* CONNECTED only */
	char peer_addr[64];		/* "192.0.2.1:40000", "[2001:db8::1]:40000" */
	struct srdma_err err;		/* all but CONNECTED */
};

/* Readable (poll/epoll, level-triggered) when srdma_listener_get_event()
 * has work to do. The caller only reads readiness: never read from it,
 * close it or change it. */
SRDMA_API int srdma_listener_fd(const struct srdma_listener *l);
/*
 * Do the acceptor's work without blocking (accept waiting connections,
 * start their setups, collect finished ones) and return the next event:
 * 1 with *ev set, valid until the next call on l; 0 when there is nothing
 * now (wait for srdma_listener_fd() again); a negative errno is reserved
 * for a listener that failed. Each call does bounded work; while it
 * returns 1 there may be more, and the fd stays readable for them, so a
 * loop takes a bounded number of events per wake (srdma-server takes 64)
 * and serves its connections between batches: a connection storm then
 * cannot hold it.
 */
SRDMA_API int srdma_listener_get_event(struct srdma_listener *l,
				       const struct srdma_event **ev);
/*
 * Block until the next client is set up: 0 with *out set (the caller's,
 * until srdma_conn_close()), or -ETIMEDOUT after timeout_ms (-1: no limit),
 * or -EINTR when a signal handler ran (so a server can stop on SIGINT).
 * Refusals and failed setups are skipped (consumed: srdma_listener_stats()
 * counts them); srdma_listener_get_event() reports them. The two may be
 * used on one listener, one call at a time. Setups still run on the
 * library's threads, so one slow or silent client never holds this call.
 */
SRDMA_API int srdma_accept(struct srdma_listener *l, int timeout_ms,
			   struct srdma_conn **out, struct srdma_err *err);

/* What the acceptor has done so far and holds now. */
struct srdma_listener_stats {
	unsigned int clients;		/* handed over, not yet closed */
	unsigned int handshakes;	/* setups in progress */
	unsigned long long accepted;	/* TCP connections taken */
	unsigned long long connected;	/* CONNECTED events */
	unsigned long long refused;	/* told "server full" */
	unsigned long long failed;	/* setups that failed (evictions too) */
	unsigned long long evicted;	/* setups evicted for max_handshakes */
	/* Added in 0.3. */
	unsigned long long waits;	/* times max_handshakes setups ran, none
					 * silent long enough to evict, and new
					 * connections were left in the backlog */
	unsigned long long prepared_used; /* setups that took a prepared QP */
};
/* size: sizeof(*st), so that the struct can grow; fields past size are
 * not written. */
SRDMA_API void srdma_listener_stats(const struct srdma_listener *l,
				    struct srdma_listener_stats *st, size_t size);

/* The port actually bound (the ephemeral one when opts.port was 0). */
SRDMA_API uint16_t srdma_listener_port(const struct srdma_listener *l);
/* The RDMA device and port the listener serves on. */
SRDMA_API const char *srdma_listener_device(const struct srdma_listener *l);
SRDMA_API int srdma_listener_ib_port(const struct srdma_listener *l);
/*
 * Stop listening and free the listener: setups in progress are cut short
 * (a finished one not yet handed over is closed with SRDMA_ERROR_SHUTDOWN),
 * refusals in flight are ended, prepared QPs (srdma_server_opts.prepared)
 * are destroyed, and its threads are joined. Connections
 * already handed over stay valid: the device and TLS context they use are
 * released when the last of them is closed. Call it from the thread that
 * calls srdma_listener_get_event(), not during such a call.
 */
SRDMA_API void srdma_listener_free(struct srdma_listener *l);

/*
 * Shared mode (srdma_server_opts.srq_slots = N): memory that does not grow
 * with every idle client.
 *  - One receive pool of N slots of buf_size bytes serves every connection
 *    of the listener (a shared receive queue): srdma_conn_recv_buf() is the
 *    pool, the same for all; a receive's wr_id is its pool slot
 *    (0..N-1), at buf->addr + wr_id * srdma_conn_buf_size(c). A slot is
 *    the connection's that received into it until srdma_conn_post_recv(c,
 *    slot) gives it back (or the connection is closed: its slots go back
 *    then); a slot it does not hold is refused (-EINVAL). Receive slots
 *    have local access only; the bytes past byte_len are a previous
 *    message's, perhaps another client's: read byte_len bytes only.
 *  - A connection has no send slots (srdma_conn_send_buf()->len is 0):
 *    reply from the receive slot the request came in (until that send
 *    completes, keep the slot), or from memory you register on
 *    srdma_conn_qp(c)->pd, which is the listener's and shared by every
 *    connection: register it with local access only. Its send queue holds
 *    send_depth entries (0: SRDMA_SHARED_SEND_DEPTH).
 *  - Completions of every connection come through one fd,
 *    srdma_listener_wc_fd(), and srdma_listener_poll_wc(), each with its
 *    connection; srdma_conn_channel() is NULL and srdma_conn_poll_wc() and
 *    srdma_conn_next_wc() return -EOPNOTSUPP.
 *  - The write window is the connection's own, as in the default mode:
 *    its memory is registered without remote access and exposed through a
 *    type 2 memory window bound to the connection's QP, so no other
 *    client's QP can write it even though all share one PD; the window's
 *    rkey dies with the connection. Its address is the window's virtual
 *    address (memory windows are not zero-based on every device).
 *  - A receive pool is shared: one client that sends faster than the
 *    program answers holds slots every client needs. The library lets a
 *    connection hold at most SRDMA_SLOTS slots (what its own receive
 *    queue would hold), and a SEND with invalidate is never allowed (on
 *    some devices it could unbind another client's window): the message
 *    that breaks either rule is dropped, the connection's QP is failed,
 *    and the program gets one completion for it with wr_id
 *    SRDMA_WR_ID_OVERRUN and status IBV_WC_REM_INV_REQ_ERR: close it. A
 *    client that stops reading your answers stalls them (RNR) while it
 *    holds their slots: bound how long (srdma-server closes a client whose
 *    answers have waited 5 s) and size N for the clients you serve
 *    (docs/SECURITY.md).
 */
#define SRDMA_WR_ID_OVERRUN UINT64_MAX
struct srdma_wc {
	struct srdma_conn *conn;	/* the connection it belongs to */
	struct ibv_wc wc;
};
/* The shared completion fd (readable, level-triggered, when
 * srdma_listener_poll_wc() has work), or -1 when the listener is not in
 * shared mode. Only watch it. */
SRDMA_API int srdma_listener_wc_fd(const struct srdma_listener *l);
/*
 * Up to max completions of connections handed over (never of one still in
 * setup, or closed), each with its connection: the shared-mode
 * counterpart of srdma_conn_poll_wc(), with the same contract (never
 * waits for a peer, only, briefly, for the pool's lock, which setups and
 * closes hold for a drain of the receive CQ; fewer than max: everything
 * was taken and the fd will wake for the next; exactly max: call again).
 * -EOPNOTSUPP when not in shared mode. Connections may outlive their
 * listener, but their completions come only through it: in shared mode,
 * close them before srdma_listener_free().
 * A completion of a connection closed meanwhile is never returned.
 */
SRDMA_API int srdma_listener_poll_wc(struct srdma_listener *l, struct srdma_wc *wc,
				     int max);
/* A pointer of the caller's, kept with a connection (NULL at first). */
SRDMA_API void srdma_conn_set_context(struct srdma_conn *c, void *ctx);
SRDMA_API void *srdma_conn_context(const struct srdma_conn *c);

/* --- client side --- */

/* Dial host (name or address), verify the server, and set up the QP.
 * One-shot: loads the CA and opens the device for this connection only
 * (before dialling: without an RDMA device it fails, -ENODEV or the
 * device layer's errno, without reaching the server). */
SRDMA_API int srdma_connect(const struct srdma_client_opts *o,
			    const char *host, struct srdma_conn **out,
			    struct srdma_err *err);

/*
 * A client for many connections: the TLS context (CA, client certificate)
 * and the RDMA device are loaded once and shared, and with o->resume set
 * the last session ticket per server is kept for resumption.
 * srdma_client_connect() may be called from several threads at once. Its
 * connections may outlive the client.
 */
SRDMA_API int srdma_client_new(const struct srdma_client_opts *o,
			       struct srdma_client **out, struct srdma_err *err);
SRDMA_API int srdma_client_connect(struct srdma_client *cl, const char *host,
				   struct srdma_conn **out, struct srdma_err *err);
SRDMA_API void srdma_client_free(struct srdma_client *cl);

/* Backoff between reconnect attempts: doubles from MIN to MAX, jittered. */
#define SRDMA_RETRY_MIN_MS 100
#define SRDMA_RETRY_MAX_MS 5000
/*
 * Reconnect after a connection ended (close it first, with
 * srdma_conn_close()): srdma_client_connect() to host, tried again with
 * exponential backoff (SRDMA_RETRY_MIN_MS doubling to SRDMA_RETRY_MAX_MS,
 * each wait jittered) until it succeeds. The new connection has a new QP and
 * new PSNs, and resumes the TLS session when the client keeps tickets
 * (resume) and holds one. Work that was in flight on the old connection is
 * not carried over: the caller decides what to do again. Returns 0 with
 * *out set; -ETIMEDOUT once timeout_ms (-1: no limit) has passed, err
 * saying why the last attempt failed; -EINTR when a signal handler ran
 * during a wait; at once when trying again cannot help (no host, out of
 * memory).
 * *attempts (may be NULL): how many attempts were made.
 */
SRDMA_API int srdma_client_reconnect(struct srdma_client *cl, const char *host,
				     int timeout_ms, struct srdma_conn **out,
				     unsigned int *attempts, struct srdma_err *err);

/* --- a connection --- */

/*
 * Memory: a connection has SRDMA_SLOTS send slots and SRDMA_SLOTS receive
 * slots of srdma_conn_buf_size() bytes each; slot i starts at
 * buf->addr + i * srdma_conn_buf_size(c). Receive slot i is posted with
 * wr_id i (all of them before the QP left INIT): a SEND from the peer lands
 * in one as IBV_WC_RECV, and an RDMA WRITE with immediate into our window
 * consumes one too, as IBV_WC_RECV_RDMA_WITH_IMM (byte_len 0, the data is
 * in the window). Read a receive slot only after its completion, and post
 * it again (srdma_conn_post_recv()) only when done with its bytes. The send
 * slots are the caller's to write and send from as it likes (the srdma_buf
 * is const; the memory is not).
 *
 * At handover: all SRDMA_SLOTS receives are posted (the one the peer-binding
 * message used, again), the send queue is empty, and no completion of the
 * library's own is left in either CQ. The send queue holds send_depth
 * entries (srdma_rdma_opts; default SRDMA_SLOTS); an unsignaled send keeps
 * its entry until a later signaled one completes, and only sends posted
 * with IBV_SEND_SIGNALED complete. An echo-style server that posts its
 * reply from the slot a message arrived in, and posts that receive again
 * when the reply's send completes, never overruns either queue.
 *
 * Completions: a receive's wr_id is its slot (0..SRDMA_SLOTS-1); a send's
 * is whatever you posted. A completion with a status other than
 * IBV_WC_SUCCESS (its opcode is then undefined) means the QP has failed:
 * every later one is flushed and the connection is done; close it with
 * SRDMA_ERROR_QP so that the peer learns why.
 */
SRDMA_API const struct srdma_conn_info *srdma_conn_info(const struct srdma_conn *c);
SRDMA_API struct ibv_qp *srdma_conn_qp(const struct srdma_conn *c);
/*
 * Both CQs report to this channel; its fd is non-blocking. An event loop
 * watches the fd and calls srdma_conn_poll_wc(); a program that waits on
 * one connection calls srdma_conn_next_wc(). Either acknowledges channel
 * events and re-arms the CQs itself: use one of them per connection and
 * never ibv_get_cq_event()/ibv_req_notify_cq() yourself. The CQs are armed
 * when the connection is handed over and a completion may already be
 * waiting, so poll once before the first wait; the fd may also wake with
 * nothing to take (poll_wc then returns 0).
 */
SRDMA_API struct ibv_comp_channel *srdma_conn_channel(const struct srdma_conn *c);
/* Send slots (local access only). */
SRDMA_API const struct srdma_buf *srdma_conn_send_buf(const struct srdma_conn *c);
/* Receive slots (local access only). */
SRDMA_API const struct srdma_buf *srdma_conn_recv_buf(const struct srdma_conn *c);
/* The write window this side exposes to its peer (server side only; len 0
 * on the client): srdma_conn_buf_size() bytes, the only memory with remote
 * access. The peer learns its rkey and address (srdma_conn_info()'s
 * remote_rkey, remote_addr, remote_len) over TLS only. */
SRDMA_API const struct srdma_buf *srdma_conn_window(const struct srdma_conn *c);
SRDMA_API size_t srdma_conn_buf_size(const struct srdma_conn *c);
/* Bytes a send may carry with IBV_SEND_INLINE on this QP (0: none; at
 * least srdma_rdma_opts.max_inline). */
SRDMA_API uint32_t srdma_conn_max_inline(const struct srdma_conn *c);

/* Post receive slot i again (wr_id i): 0, -EINVAL for a slot out of
 * range, or ibv_post_recv()'s error as a negative errno. Posting a slot
 * that is still posted is the caller's bug (verbs cannot tell). */
SRDMA_API int srdma_conn_post_recv(struct srdma_conn *c, unsigned int slot);

/*
 * Next work completion from either CQ, for a program that waits on one
 * connection (an event loop uses srdma_conn_poll_wc()). timeout_ms: 0 looks
 * once without waiting (at both CQs and the control channel), -1 waits
 * forever. Returns 1 with *wc filled, 0 on timeout,
 * -ENOTCONN when the connection has ended (the peer said BYE or ERROR, was
 * lost, or stopped responding: srdma_conn_poll_ctrl() says which), or
 * another negative errno. While it waits it serves the control channel as
 * srdma_conn_poll_ctrl() does, so the peer's liveness probes are answered.
 * Sleeps on the completion channel and the control socket: no busy polling.
 * It acknowledges the channel's events itself (never call
 * ibv_get_cq_event()/ibv_ack_cq_events() on a connection you wait on here).
 */
SRDMA_API int srdma_conn_next_wc(struct srdma_conn *c, int timeout_ms,
				 struct ibv_wc *wc);

/*
 * For an event loop that watches srdma_conn_channel(c)->fd: takes the
 * channel's pending events (acknowledging them), then up to max completions
 * from the receive CQ, then the send CQ, into wc[0..max). Never blocks.
 * Returns how many it took, or a negative errno. Fewer than max: both CQs
 * were drained and are armed again, so the fd wakes the loop for the next
 * completion. Exactly max: more may be waiting and the CQs were NOT
 * re-armed, so the fd will not wake the loop for them: call again (after
 * serving other work, which is how one busy connection is kept from
 * starving the rest).
 */
SRDMA_API int srdma_conn_poll_wc(struct srdma_conn *c, struct ibv_wc *wc, int max);

/* The TLS control socket, for poll/epoll, level-triggered (poll(2), or
 * epoll without EPOLLET): readable means the peer sent a control message
 * or went away. */
SRDMA_API int srdma_conn_ctrl_fd(const struct srdma_conn *c);
/* How a connection ended (srdma_conn_poll_ctrl()'s result). */
enum srdma_close {
	SRDMA_CLOSE_BYE = 1,	/* the peer said BYE: an orderly end */
	SRDMA_CLOSE_ERROR = 2,	/* the peer sent ERROR: err->peer_code (enum
				 * srdma_error_code) says why, err->msg its text */
	SRDMA_CLOSE_LOST = 3,	/* closed without a word, or reset: a killed
				 * process, a reboot, a broken network */
	SRDMA_CLOSE_TIMEOUT = 4, /* the peer is not responding: nothing from it
				 * for peer_timeout_ms, a probe unanswered (a
				 * hung process, or a host that died silently) */
	SRDMA_CLOSE_PROTOCOL = 5, /* the peer broke the protocol (an invalid or
				 * unexpected message, a flood of them, or it
				 * makes us write and reads nothing): err says
				 * how */
};

/*
 * Serve the control channel without blocking: read what the peer sent,
 * answer its liveness probes, and probe it in turn. Call it when the
 * control fd is readable and whenever srdma_conn_ctrl_timeout_ms() comes
 * due. One call does a bounded amount of work (a few TLS records) and may
 * leave bytes for the next, so a peer cannot hold the caller's loop; what it
 * leaves is still in the socket, so the fd stays readable for it (nothing
 * waits unseen inside the library).
 *
 * Liveness is the peer's judgement of us too: it declares us dead when its
 * peer_timeout_ms passes without a word from us and its probe (PING) goes
 * unanswered, and only this call (or srdma_conn_next_wc()) answers. Serve
 * the control fd whenever it is readable; a program that leaves it for
 * long (a third of the peer's timeout; both sides default to
 * SRDMA_DEFAULT_PEER_TIMEOUT_MS) is dropped as hung.
 *
 * Returns 0 while the connection goes on, or how it ended (enum
 * srdma_close, > 0) with err filled (err->step, err->msg; err->code a
 * negative errno, 0 for BYE). Then close the connection with
 * srdma_conn_close(c, 0, NULL), which tells the peer the fitting reason.
 * Once it has returned non-zero, every later call returns the same, with
 * the same err.
 */
SRDMA_API int srdma_conn_poll_ctrl(struct srdma_conn *c, struct srdma_err *err);
/* Milliseconds until srdma_conn_poll_ctrl() must be called even if the
 * control fd stays quiet (to probe the peer, or to declare it dead); 0: now;
 * -1: no timer (liveness off, the peer cannot be probed, or ended). */
SRDMA_API int srdma_conn_ctrl_timeout_ms(const struct srdma_conn *c);

/*
 * Say BYE (code 0) or ERROR(code, text) to the peer (code: enum
 * srdma_error_code; text NULL: its name), end TLS (close_notify), then free
 * everything: QP, CQs, channel, MRs, PD, TLS, socket, and the connection's
 * place among its listener's max_clients. c may be NULL. Code 0 on a
 * connection srdma_conn_poll_ctrl() reported ended sends what fits: after
 * SRDMA_CLOSE_TIMEOUT, ERROR(SRDMA_ERROR_NOT_RESPONDING); after
 * SRDMA_CLOSE_PROTOCOL, ERROR(SRDMA_ERROR_BAD_MESSAGE); else BYE. After a
 * failed completion, pass SRDMA_ERROR_QP. Never waits: the message goes if
 * the socket takes it at once (a peer that does not read, or whose
 * connection is gone, gets nothing).
 */
SRDMA_API void srdma_conn_close(struct srdma_conn *c, uint16_t code,
				const char *text);

/*
 * Sealed messages (0.5). On a connection whose two sides set the same
 * seal cipher (srdma_conn_info()->seal), send nothing over the QP but what
 * srdma_conn_seal() made, and read nothing the peer sent (a receive slot's
 * bytes, the write window's) but through srdma_conn_open(). A sealed
 * message is SRDMA_SEAL_OVERHEAD bytes longer than the message:
 *
 *	header (SRDMA_SEAL_HDR_LEN: version, flags, kind, key epoch,
 *	        sequence number; authenticated, not secret)
 *	ciphertext (len bytes)
 *	tag (SRDMA_SEAL_TAG_LEN)
 *
 * under per-direction keys exported from the TLS session and a nonce made
 * of the direction, the epoch and the sequence number (docs/PROTOCOL.md).
 * kind is the program's (srdma-client uses it for what a reply answers):
 * it is authenticated, so the immediate data or opcode a program also uses
 * can be checked against it; an observer sees it.
 *
 * srdma_conn_seal() seals len bytes (up to SRDMA_MAX_BUF_SIZE) at msg into
 * out (cap bytes; the message needs len + SRDMA_SEAL_OVERHEAD), either
 * apart or in place (msg == out + SRDMA_SEAL_HDR_LEN), and takes the next
 * sequence number: post what it made, in the order sealed (SENDs and RDMA
 * WRITEs share one sequence; notify each WRITE to the peer, e.g. WRITE
 * WITH IMMEDIATE carrying the sealed length, so that the peer opens it).
 * Returns 0 with *out_len set; -EOPNOTSUPP on a connection without
 * sealing; -ENOBUFS when cap is too small; -EINVAL when msg and out overlap
 * otherwise; -EKEYEXPIRED after SRDMA_SEAL_MAX_MSGS messages in one
 * direction in one key epoch (rekey, or close and reconnect); -EIO when
 * the cipher failed (out is wiped, and the sequence number is used up, so
 * the peer will refuse the next message: close the connection).
 *
 * srdma_conn_open() opens, in place, a sealed message of len bytes at buf
 * (a receive slot's byte_len bytes, or the window's bytes a WRITE's
 * notification names; a len beyond srdma_conn_buf_size(), a slot's and
 * the window's size, is refused without reading past it): 0 with *kind, *msg (buf + SRDMA_SEAL_HDR_LEN) and
 * *msg_len (len - SRDMA_SEAL_OVERHEAD) set, only when its tag verifies
 * under the peer's key and it is the very next message the peer sealed.
 * Anything else (forged, replayed, reordered, lost, altered, truncated, or
 * bytes written into the window that the peer never sealed) returns
 * -EBADMSG, wipes what it decrypted, fails the connection's QP (during a
 * rekey, both of them), and ends
 * the connection: srdma_conn_poll_ctrl() then returns SRDMA_CLOSE_PROTOCOL
 * with the reason, every later open returns -ENOTCONN, and
 * srdma_conn_close(c, 0, NULL) tells the peer SRDMA_ERROR_SEAL.
 *
 * Sealing does not hide sizes, timing, QPNs, PSNs or opcodes (they are in
 * the packets' headers), and cannot stop a peer or an injector from
 * ending a connection (docs/SECURITY.md). One thread may seal while
 * another opens on the same connection; two seals (or two opens) must not
 * overlap. On a connection that rekeys, open from the thread that takes
 * completions (a rekey moves the receiving key there); a seal may run on
 * any thread while a rekey moves the sending key (the two take a lock: a
 * number is never used twice under one key).
 */
#define SRDMA_SEAL_HDR_LEN 16
#define SRDMA_SEAL_TAG_LEN 16
#define SRDMA_SEAL_OVERHEAD (SRDMA_SEAL_HDR_LEN + SRDMA_SEAL_TAG_LEN)
#define SRDMA_SEAL_MAX_MSGS (1ull << 32)
SRDMA_API int srdma_conn_seal(struct srdma_conn *c, uint16_t kind, const void *msg,
			      size_t len, void *out, size_t cap, size_t *out_len);
SRDMA_API int srdma_conn_open(struct srdma_conn *c, void *buf, size_t len,
			      uint16_t *kind, void **msg, size_t *msg_len);
/* "off", "aes-256-gcm", "chacha20-poly1305" ("unknown" otherwise). */
SRDMA_API const char *srdma_seal_name(int cipher);

/*
 * Rekeying, make before break (0.5): move a live connection to a fresh QP
 * with fresh PSNs (and, sealed, fresh keys in the next epoch) without
 * losing, duplicating or reordering a message, so that no (QPN, PSN) pair
 * lives long enough for a PSN sweep (docs/SECURITY.md). Both sides opt
 * in (the rekey option, or rekey_interval_ms, in their options); then
 * either side may start one with srdma_conn_rekey() (or by its interval);
 * the rest runs inside srdma_conn_poll_ctrl() and
 * srdma_conn_poll_wc() / srdma_conn_next_wc() on both sides, over the
 * control channel (docs/PROTOCOL.md, "Rekeying"), and ends within
 * SRDMA_REKEY_TIMEOUT_MS or ends the connection. srdma_conn_rekey()
 * returns 0 once the offer is out (-EBUSY while one runs; -EOPNOTSUPP in
 * shared mode or when either side did not opt in); srdma_conn_rekeying() says
 * whether one is in flight, srdma_conn_info()->epoch counts those done.
 *
 * What a program must do, on a connection that may rekey:
 *  - take completions only through srdma_conn_poll_wc() or
 *    srdma_conn_next_wc() (they hide the rekey's own), and serve the
 *    control channel as always;
 *  - fetch srdma_conn_qp(c) for each post, from the thread that makes
 *    those calls: it changes at the switch (the old QP drains and is
 *    destroyed by the library);
 *  - sealed: post what srdma_conn_seal() made before its next call into
 *    the library (the key changes at the switch too).
 * Completions keep their meaning: a receive's wr_id is its slot, and
 * slots given back with srdma_conn_post_recv() go where the peer sends.
 * The send wr_id SRDMA_WR_ID_REKEY is the library's: never post it.
 */
#define SRDMA_WR_ID_REKEY (UINT64_MAX - 1)
#define SRDMA_REKEY_MAX_MS 30000
SRDMA_API int srdma_conn_rekey(struct srdma_conn *c, struct srdma_err *err);
SRDMA_API int srdma_conn_rekeying(const struct srdma_conn *c);

/* Human-readable name of an ERROR code ("server full", ...). */
SRDMA_API const char *srdma_error_name(uint16_t code);

#ifdef __cplusplus
}
#endif

#endif /* SRDMA_H */
