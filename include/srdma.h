/*
 * srdma: a secure bootstrap for RDMA reliable connections.
 *
 * Two peers meet over TLS, exchange cryptographically random 24-bit packet
 * sequence numbers (PSNs) and every queue-pair parameter over that channel,
 * then each brings its RC queue pair up with raw IB verbs
 * (RESET -> INIT -> RTR -> RTS) and checks the result with ibv_query_qp.
 * This header is the whole public API.
 *
 * Conventions: functions that can fail return 0 on success and a negative
 * errno value on failure, fill a struct srdma_err (which step failed and
 * why) when given one, and leave nothing half-made behind.
 *
 * A minimal server:
 *
 *	struct srdma_server_opts so = { .cert_file = "server.pem",
 *					.key_file = "server.key" };
 *	struct srdma_listener *l;
 *	struct srdma_conn *c;
 *	struct srdma_err err;
 *	if (srdma_listen(&so, &l, &err) == 0 && srdma_accept(l, &c, &err) == 0)
 *		... srdma_conn_qp(c) is in RTS, connected to the client ...
 *
 * and a client: srdma_connect(&co, "server.example", &c, &err) with
 * co.ca_file set.
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
};

/* What failed: step names the operation ("tls handshake", "modify QP to
 * RTR", ...), msg says why (errno text, OpenSSL reason, WC status, or the
 * peer's ERROR message). code is a negative errno. */
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

struct srdma_server_opts {
	const char *bind_addr;	/* NULL: every address (IPv6 and IPv4) */
	uint16_t port;		/* 0: 4433 */
	const char *cert_file;	/* PEM certificate chain, required */
	const char *key_file;	/* PEM private key, required */
	const char *client_ca;	/* set: require client certificates issued by
				 * this CA (PEM file) */
	unsigned int max_clients; /* 0: 10 */
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
};

struct srdma_client_opts {
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
};

/* Fill with defaults (gid_index -1, everything else 0 = default). */
SRDMA_API void srdma_server_opts_init(struct srdma_server_opts *o);
SRDMA_API void srdma_client_opts_init(struct srdma_client_opts *o);

struct srdma_listener;
struct srdma_client;
struct srdma_conn;

/* Where one connection's setup spent its time, in microseconds, as this
 * side saw it. params_us is the control messages' own time: HELLO, PARAMS
 * and READY, waits for the peer included. */
struct srdma_setup_times {
	uint32_t tcp_us;	/* TCP connect (client; 0 on the server) */
	uint32_t tls_us;	/* TLS handshake */
	uint32_t params_us;	/* HELLO, PARAMS, READY exchange */
	uint32_t qp_create_us;	/* PD, CQs, MRs, QP to INIT, receives, PSN */
	uint32_t qp_connect_us;	/* INIT -> RTR -> RTS and ibv_query_qp check */
	uint32_t binding_us;	/* the binding exchange over RDMA */
	uint32_t total_us;	/* all of the above, start to finish */
};

/* A connection's negotiated state, fixed once it is up. */
struct srdma_conn_info {
	uint32_t local_qpn, remote_qpn;
	uint32_t local_psn, remote_psn;	/* secret: log only when asked */
	enum srdma_psn_mode psn_mode;
	enum ibv_mtu path_mtu;
	int gid_index;
	char dev_name[64];
	char peer_addr[64];		/* "ip:port" */
	char tls_version[16];		/* "TLSv1.3" */
	char tls_cipher[64];
	char peer_cert_subject[128];	/* "" when the peer sent none */
	int tls_resumed;		/* 1: an abbreviated (resumed) handshake */
	struct srdma_setup_times times;
	/* The peer's RDMA write window (len 0: none). Secret. The address
	 * is where RDMA WRITEs aim: 0 for the window's first byte when the
	 * peer's device registers it zero-based (srdma asks for that, so the
	 * peer's virtual addresses stay its own), else its virtual address. */
	uint64_t remote_addr;
	uint32_t remote_rkey;
	uint32_t remote_len;
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

/* Load the certificate and key, open the RDMA device, and listen. */
SRDMA_API int srdma_listen(const struct srdma_server_opts *o,
			   struct srdma_listener **out, struct srdma_err *err);
/* The listening socket, for poll/epoll (readable: a client is waiting). */
SRDMA_API int srdma_listener_fd(const struct srdma_listener *l);
/* The port actually bound (useful with port 0... which means 4433). */
SRDMA_API uint16_t srdma_listener_port(const struct srdma_listener *l);
SRDMA_API void srdma_listener_free(struct srdma_listener *l);
/* The RDMA device and port the listener serves on. */
SRDMA_API const char *srdma_listener_device(const struct srdma_listener *l);
SRDMA_API int srdma_listener_ib_port(const struct srdma_listener *l);

/* accept(2) one TCP connection (non-blocking listener: -EAGAIN when none). */
SRDMA_API int srdma_accept_fd(struct srdma_listener *l, int *fd,
			      struct srdma_err *err);
/* The whole setup on an accepted socket, within the handshake deadline:
 * TLS, HELLO, PARAMS, QP to RTS and verified, READY. Takes ownership of fd
 * (closed on failure). Safe to call from several threads at once. */
SRDMA_API int srdma_server_handshake(struct srdma_listener *l, int fd,
				     struct srdma_conn **out,
				     struct srdma_err *err);
/* Complete TLS on fd, send ERROR(code, text), close fd. */
SRDMA_API void srdma_server_reject(struct srdma_listener *l, int fd,
				   uint16_t code, const char *text);
/* srdma_accept_fd() + srdma_server_handshake(), blocking. */
SRDMA_API int srdma_accept(struct srdma_listener *l, struct srdma_conn **out,
			   struct srdma_err *err);

/* --- client side --- */

/* Dial host (name or address), verify the server, and set up the QP.
 * One-shot: loads the CA and opens the device for this connection only. */
SRDMA_API int srdma_connect(const struct srdma_client_opts *o,
			    const char *host, struct srdma_conn **out,
			    struct srdma_err *err);

/*
 * A client for many connections: the TLS context (CA, client certificate)
 * and the RDMA device are loaded once and shared, and with o->resume set
 * the last session ticket per server is kept for resumption. The strings in
 * o are copied. srdma_client_connect() may be called from several threads at
 * once. The client must outlive its connections.
 */
SRDMA_API int srdma_client_new(const struct srdma_client_opts *o,
			       struct srdma_client **out, struct srdma_err *err);
SRDMA_API int srdma_client_connect(struct srdma_client *cl, const char *host,
				   struct srdma_conn **out, struct srdma_err *err);
SRDMA_API void srdma_client_free(struct srdma_client *cl);

/* --- a connection --- */

SRDMA_API const struct srdma_conn_info *srdma_conn_info(const struct srdma_conn *c);
SRDMA_API struct ibv_qp *srdma_conn_qp(const struct srdma_conn *c);
/* Both CQs report to this channel, whose fd is non-blocking; see
 * srdma_conn_poll_wc() for an event loop, srdma_conn_next_wc() to wait.
 * The CQs are armed when the connection is handed over, and a completion
 * may already be waiting: poll once before the first wait. */
SRDMA_API struct ibv_comp_channel *srdma_conn_channel(const struct srdma_conn *c);
/* Send slots (SRDMA_SLOTS x buf_size, local access only). */
SRDMA_API const struct srdma_buf *srdma_conn_send_buf(const struct srdma_conn *c);
/* Receive slots (SRDMA_SLOTS x buf_size); slot i is posted with wr_id i.
 * All are posted before the QP leaves INIT. */
SRDMA_API const struct srdma_buf *srdma_conn_recv_buf(const struct srdma_conn *c);
/* The write window this side exposes to its peer (server side only; len 0
 * on the client). The only memory with remote access. */
SRDMA_API const struct srdma_buf *srdma_conn_window(const struct srdma_conn *c);
SRDMA_API size_t srdma_conn_buf_size(const struct srdma_conn *c);
/* Bytes a send may carry with IBV_SEND_INLINE on this QP (0: none; at
 * least srdma_rdma_opts.max_inline).
 * Send work requests complete only when posted with IBV_SEND_SIGNALED. */
SRDMA_API uint32_t srdma_conn_max_inline(const struct srdma_conn *c);

/* Post receive slot i again. */
SRDMA_API int srdma_conn_post_recv(struct srdma_conn *c, unsigned int slot);

/*
 * Next work completion from either CQ. timeout_ms: 0 polls only, -1 waits
 * forever. Returns 1 with *wc filled, 0 on timeout, negative errno on error.
 * Waits on the completion channel: no busy polling.
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
/*
 * Serve the control channel without blocking: read what the peer sent,
 * answer its liveness probes, and probe it in turn. Call it when the
 * control fd is readable and whenever srdma_conn_ctrl_timeout_ms() comes
 * due. One call does a bounded amount of work (a few TLS records) and may
 * leave bytes for the next, so a peer cannot hold the caller's loop.
 *
 * Returns 0 while the connection goes on; 1 when it has ended, with
 * err->code saying how:
 *   0             the peer said BYE (err->msg "bye")
 *   -ECONNABORTED the peer sent ERROR: err->peer_code, err->msg its text
 *   -ECONNRESET   the connection was lost (closed without a word, reset)
 *   -ETIMEDOUT    the peer is not responding: it said nothing for
 *                 peer_timeout_ms and left a probe unanswered (a hung
 *                 process, or a host that died without closing)
 * and a negative errno when the peer broke the protocol (an invalid or
 * unexpected message, a flood, or -EPIPE: it makes us write but does not
 * read). Close the connection after either. Once it has returned non-zero,
 * every later call returns the same.
 */
SRDMA_API int srdma_conn_poll_ctrl(struct srdma_conn *c, struct srdma_err *err);
/* Milliseconds until srdma_conn_poll_ctrl() must be called even if the
 * control fd stays quiet (to probe the peer, or to declare it dead); 0: now;
 * -1: no timer (liveness off, the peer cannot be probed, or ended). */
SRDMA_API int srdma_conn_ctrl_timeout_ms(const struct srdma_conn *c);

/* Say BYE (code 0) or ERROR(code, text) to the peer, then free everything:
 * QP, CQs, channel, MRs, PD, TLS, socket. c may be NULL. Never waits: the
 * message goes if the socket takes it at once (a peer that does not read
 * gets nothing). */
SRDMA_API void srdma_conn_close(struct srdma_conn *c, uint16_t code,
				const char *text);

/* Human-readable name of an ERROR code ("server full", ...). */
SRDMA_API const char *srdma_error_name(uint16_t code);

#ifdef __cplusplus
}
#endif

#endif /* SRDMA_H */
