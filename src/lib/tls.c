/*
 * TLS policy and I/O (OpenSSL 3). TLS 1.2 is the floor and only AEAD suites
 * with ECDHE are offered for it; TLS 1.3 is preferred (OpenSSL negotiates the
 * highest common version). The client always verifies the server's chain and
 * name: there is no switch to turn that off. Renegotiation is disabled.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "srdma_internal.h"

void srdma_tls_reason(SSL *ssl, char *buf, size_t len)
{
	/* The first error queued is the root cause ("No such file or
	 * directory"); the last is OpenSSL's outermost summary ("system lib"). */
	unsigned long e = ERR_peek_error();
	long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	char reason[160];

	if (!e)
		snprintf(reason, sizeof(reason), "unknown TLS failure");
	else if (ERR_SYSTEM_ERROR(e))
		snprintf(reason, sizeof(reason), "%s", strerror(ERR_GET_REASON(e)));
	else if (ERR_reason_error_string(e))
		snprintf(reason, sizeof(reason), "%s", ERR_reason_error_string(e));
	else
		snprintf(reason, sizeof(reason), "OpenSSL error 0x%lx", e);
	if (v != X509_V_OK)
		snprintf(buf, len, "%s: %s", reason, X509_verify_cert_error_string(v));
	else
		snprintf(buf, len, "%s", reason);
	ERR_clear_error();
}

static int ctx_err(SSL_CTX *ctx, struct srdma_err *err, const char *step,
		   const char *what)
{
	char why[160];

	srdma_tls_reason(NULL, why, sizeof(why));
	srdma_set_err(err, -EINVAL, step, "%s: %s", what, why);
	SSL_CTX_free(ctx);
	return -EINVAL;
}

static SSL_CTX *new_ctx(const SSL_METHOD *method)
{
	SSL_CTX *ctx = SSL_CTX_new(method);

	if (!ctx)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, SRDMA_TLS12_CIPHERS)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	/* An idle connection keeps no 16 KiB record buffers: a server holding
	 * many clients pays for them only while a message is in transit. */
	SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY | SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

static int load_cert_key(SSL_CTX *ctx, const char *cert, const char *key,
			 struct srdma_err *err)
{
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return ctx_err(ctx, err, "load certificate", cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return ctx_err(ctx, err, "load private key", key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return ctx_err(ctx, err, "load private key",
			       "key does not match the certificate");
	return 0;
}

/*
 * Session ticket keys. OpenSSL's own key lives as long as the context, and
 * it seals TLS 1.2 tickets too, whose resumption runs no new key exchange:
 * whoever later reads that key from memory decrypts every recorded TLS 1.2
 * session that was resumed with it, PSNs and rkeys included. So tickets are
 * sealed here instead: for TLS 1.3 only (its resumption still runs ECDHE),
 * under a key that is replaced every SRDMA_TICKET_PERIOD_S. The key before
 * it still opens tickets for one more period (each ticket lives one period,
 * so none outlives the key that opens it); after that it is wiped. A stolen
 * key is good for at most two periods of tickets, and never for traffic.
 */
struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	int64_t born_ms;
	bool set;
};

struct ticket_keys {
	pthread_mutex_t lock;
	struct ticket_key cur, prev;
};

static int ticket_keys_idx = -1;
static pthread_once_t ticket_keys_once = PTHREAD_ONCE_INIT;

static void ticket_key_wipe(struct ticket_key *k)
{
	OPENSSL_cleanse(k, sizeof(*k));
}

/* ex_data destructor: the keys die with the context that uses them. */
static void ticket_keys_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
			     long argl, void *argp)
{
	struct ticket_keys *tk = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (!tk)
		return;
	ticket_key_wipe(&tk->cur);
	ticket_key_wipe(&tk->prev);
	pthread_mutex_destroy(&tk->lock);
	free(tk);
}

static void ticket_keys_index(void)
{
	ticket_keys_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ticket_keys_free);
}

/* The current key becomes the previous one; a fresh one is drawn. */
static int ticket_keys_rotate(struct ticket_keys *tk)
{
	struct ticket_key k = { .born_ms = srdma_now_ms(), .set = true };

	if (RAND_bytes(k.name, sizeof(k.name)) != 1 ||
	    RAND_priv_bytes(k.aes, sizeof(k.aes)) != 1 ||
	    RAND_priv_bytes(k.hmac, sizeof(k.hmac)) != 1) {
		ticket_key_wipe(&k);
		return -EIO;
	}
	ticket_key_wipe(&tk->prev);
	tk->prev = tk->cur;
	tk->cur = k;
	ticket_key_wipe(&k);
	return 0;
}

static struct ticket_keys *ticket_keys_of(SSL_CTX *ctx)
{
	return ticket_keys_idx < 0 ? NULL : SSL_CTX_get_ex_data(ctx, ticket_keys_idx);
}

static int ticket_cipher_init(const struct ticket_key *k, unsigned char *iv,
			      EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac,
						  sizeof(k->hmac)),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	if (EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv, enc) != 1 ||
	    EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	return 0;
}

/* OpenSSL's ticket key callback: 1 sealed, 2 opened (and a new ticket is
 * issued, as OpenSSL does for TLS 1.3 with its own key: a ticket is not
 * offered twice), 0 no ticket (issue none, or a full handshake). */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
			 EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_keys *tk = ticket_keys_of(SSL_get_SSL_CTX(ssl));
	const struct ticket_key *k = NULL;
	int ret;

	/* No TLS 1.2 tickets: none issued, none accepted. */
	if (!tk || SSL_version(ssl) != TLS1_3_VERSION)
		return 0;
	pthread_mutex_lock(&tk->lock);
	if (srdma_now_ms() - tk->cur.born_ms >= (int64_t)SRDMA_TICKET_PERIOD_S * 1000 &&
	    ticket_keys_rotate(tk)) {
		pthread_mutex_unlock(&tk->lock);
		return -1;
	}
	if (enc) {
		k = &tk->cur;
		memcpy(key_name, k->name, sizeof(k->name));
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
			k = NULL;
	} else if (tk->cur.set && memcmp(key_name, tk->cur.name, 16) == 0) {
		k = &tk->cur;
	} else if (tk->prev.set && memcmp(key_name, tk->prev.name, 16) == 0) {
		k = &tk->prev;
	}
	if (!k)
		ret = enc ? -1 : 0;
	else if (ticket_cipher_init(k, iv, cctx, hctx, enc))
		ret = -1;
	else
		ret = enc ? 1 : 2;
	pthread_mutex_unlock(&tk->lock);
	return ret;
}

static int ticket_keys_attach(SSL_CTX *ctx, struct srdma_err *err)
{
	struct ticket_keys *tk;

	pthread_once(&ticket_keys_once, ticket_keys_index);
	if (ticket_keys_idx < 0)
		return ctx_err(ctx, err, "tls setup", "ticket key storage");
	tk = calloc(1, sizeof(*tk));
	if (!tk)
		return ctx_err(ctx, err, "tls setup", "out of memory");
	pthread_mutex_init(&tk->lock, NULL);
	if (ticket_keys_rotate(tk) || SSL_CTX_set_ex_data(ctx, ticket_keys_idx, tk) != 1) {
		ticket_keys_free(NULL, tk, NULL, 0, 0, NULL);
		return ctx_err(ctx, err, "tls setup", "ticket key");
	}
	/* A ticket lives one period, so the key that opens it is still held. */
	SSL_CTX_set_timeout(ctx, SRDMA_TICKET_PERIOD_S);
	if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) != 1)
		return ctx_err(ctx, err, "tls setup", "ticket key callback");
	return 0;
}

int srdma_tls_rotate_ticket_key(SSL_CTX *ctx)
{
	struct ticket_keys *tk = ticket_keys_of(ctx);
	int rc;

	if (!tk)
		return -ENOENT;
	pthread_mutex_lock(&tk->lock);
	rc = ticket_keys_rotate(tk);
	pthread_mutex_unlock(&tk->lock);
	return rc;
}

int srdma_tls_load_crl(SSL_CTX *ctx, const char *file, struct srdma_err *err)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	X509_LOOKUP *lu = store ? X509_STORE_add_lookup(store, X509_LOOKUP_file()) : NULL;
	char why[160];

	if (!lu || X509_load_crl_file(lu, file, X509_FILETYPE_PEM) <= 0) {
		srdma_tls_reason(NULL, why, sizeof(why));
		srdma_set_err(err, -EINVAL, "load CRL", "%s: %s", file, why);
		return -EINVAL;
	}
	/* Every certificate of the peer's chain is checked against a CRL of
	 * its issuer; a chain whose CA has no CRL in the file is refused. */
	X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	return 0;
}

int srdma_tls_server_ctx(SSL_CTX **out, const char *cert, const char *key,
			 const char *client_ca, bool tickets, struct srdma_err *err)
{
	SSL_CTX *ctx;
	int rc;

	if (!cert || !key) {
		srdma_set_err(err, -EINVAL, "tls setup",
			      "a certificate and a key are required");
		return -EINVAL;
	}
	ctx = new_ctx(TLS_server_method());
	if (!ctx)
		return ctx_err(NULL, err, "tls setup", "SSL_CTX_new");
	rc = load_cert_key(ctx, cert, key, err);
	if (rc)
		return rc;
	if (client_ca) {
		STACK_OF(X509_NAME) *names;

		if (SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1)
			return ctx_err(ctx, err, "load client CA", client_ca);
		names = SSL_load_client_CA_file(client_ca);
		if (!names)
			return ctx_err(ctx, err, "load client CA", client_ca);
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
				   SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	/*
	 * Resumption is by stateless tickets only (sealed with a key that
	 * lives in this context and dies with it): no server-side cache
	 * grows with clients. One ticket per full handshake is enough for a
	 * client that reconnects. A resumed session keeps the client
	 * certificate it was verified with; the context id ties it to us.
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"srdma", 5) != 1)
		return ctx_err(ctx, err, "tls setup", "session id context");
	if (tickets) {
		rc = ticket_keys_attach(ctx, err);
		if (rc)
			return rc;
		SSL_CTX_set_num_tickets(ctx, 1);
	} else {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	*out = ctx;
	return 0;
}

int srdma_tls_client_ctx(SSL_CTX **out, const char *ca, const char *cert,
			 const char *key, struct srdma_err *err)
{
	struct stat st;
	SSL_CTX *ctx;
	int rc, ok;

	if (!ca) {
		srdma_set_err(err, -EINVAL, "tls setup",
			      "a CA file is required to verify the server");
		return -EINVAL;
	}
	if ((cert == NULL) != (key == NULL)) {
		srdma_set_err(err, -EINVAL, "tls setup",
			      "a client certificate needs its key, and a key its certificate");
		return -EINVAL;
	}
	ctx = new_ctx(TLS_client_method());
	if (!ctx)
		return ctx_err(NULL, err, "tls setup", "SSL_CTX_new");
	if (stat(ca, &st) == 0 && S_ISDIR(st.st_mode))
		ok = SSL_CTX_load_verify_locations(ctx, NULL, ca);
	else
		ok = SSL_CTX_load_verify_locations(ctx, ca, NULL);
	if (ok != 1)
		return ctx_err(ctx, err, "load CA", ca);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cert) {
		rc = load_cert_key(ctx, cert, key, err);
		if (rc)
			return rc;
	}
	*out = ctx;
	return 0;
}

/* The ticket sink lives in the SSL's app data (nothing else uses it). */
struct ticket_sink {
	srdma_ticket_fn cb;
	void *arg;
};

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct ticket_sink *t = SSL_get_app_data(ssl);

	if (!t || !t->cb || !SSL_SESSION_is_resumable(sess))
		return 0;	/* OpenSSL frees it */
	t->cb(t->arg, sess);
	return 1;		/* the sink owns the reference now */
}

void srdma_tls_client_enable_tickets(SSL_CTX *ctx)
{
	/* Tickets go to the sink, not to OpenSSL's internal cache. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
				       SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session);
}

int srdma_tls_set_ticket_sink(SSL *ssl, srdma_ticket_fn cb, void *arg)
{
	struct ticket_sink *t = SSL_get_app_data(ssl);

	if (!cb) {
		SSL_set_app_data(ssl, NULL);
		free(t);
		return 0;
	}
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t)
			return -ENOMEM;
		SSL_set_app_data(ssl, t);
	}
	t->cb = cb;
	t->arg = arg;
	return 0;
}

static bool is_ip_literal(const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, buf) == 1 ||
	       inet_pton(AF_INET6, name, buf) == 1;
}

int srdma_tls_client_ssl(SSL_CTX *ctx, int fd, const char *name, SSL **out,
			 struct srdma_err *err)
{
	SSL *ssl = SSL_new(ctx);
	char why[160];

	if (!ssl)
		goto fail;
	if (fd >= 0 && SSL_set_fd(ssl, fd) != 1)
		goto fail;
	if (is_ip_literal(name)) {
		X509_VERIFY_PARAM *p = SSL_get0_param(ssl);

		if (X509_VERIFY_PARAM_set1_ip_asc(p, name) != 1)
			goto fail;
	} else {
		/* Host name check, and SNI for servers that need it. */
		if (SSL_set1_host(ssl, name) != 1 ||
		    SSL_set_tlsext_host_name(ssl, name) != 1)
			goto fail;
		/* The name must be in a DNS subjectAltName: a certificate
		 * that has none is not matched by its subject's CN. */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
				  X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
	}
	*out = ssl;
	return 0;
fail:
	srdma_tls_reason(NULL, why, sizeof(why));
	srdma_set_err(err, -EINVAL, "tls setup", "server name '%s': %s", name, why);
	SSL_free(ssl);
	return -EINVAL;
}

int srdma_tls_client_first_flight(SSL *ssl, struct srdma_err *err)
{
	BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
	char why[200];
	int r;

	if (!in || !out) {
		BIO_free(in);
		BIO_free(out);
		srdma_set_err(err, -ENOMEM, "tls handshake", "out of memory");
		return -ENOMEM;
	}
	/* Nothing to read yet is "try again", not the end of the stream. */
	BIO_set_mem_eof_return(in, -1);
	SSL_set_bio(ssl, in, out);
	ERR_clear_error();	/* SSL_get_error() reads the thread's queue */
	r = SSL_connect(ssl);
	if (r != 1 && SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ && BIO_pending(out) > 0)
		return 0;
	srdma_tls_reason(ssl, why, sizeof(why));
	srdma_set_err(err, -EPROTO, "tls handshake", "ClientHello: %s", why);
	return -EPROTO;
}

int srdma_tls_client_attach(SSL *ssl, int fd, int64_t deadline, struct srdma_err *err)
{
	char *p;
	long left = BIO_get_mem_data(SSL_get_wbio(ssl), &p);

	while (left > 0) {
		struct pollfd pf = { .fd = fd, .events = POLLOUT };
		ssize_t n = send(fd, p, (size_t)left, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			left -= n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			int rc = errno == EPIPE || errno == ECONNRESET ? -ECONNRESET : -errno;

			srdma_set_err(err, rc, "tls handshake", "sending ClientHello: %s",
				      strerror(errno));
			return rc;
		}
		if (n < 0 && errno == EAGAIN && poll(&pf, 1, srdma_ms_left(deadline)) == 0) {
			srdma_set_err(err, -ETIMEDOUT, "tls handshake",
				      "no handshake within the deadline");
			return -ETIMEDOUT;
		}
	}
	/* The memory BIOs go with this (SSL_set_bio frees them). */
	if (SSL_set_fd(ssl, fd) != 1) {
		srdma_set_err(err, -ENOMEM, "tls handshake", "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* Wait for the socket as OpenSSL asked; -ETIMEDOUT past the deadline. */
static int wait_io(SSL *ssl, int ssl_err, int64_t deadline)
{
	struct pollfd p = {
		.fd = SSL_get_fd(ssl),
		.events = ssl_err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN,
	};
	int n;

	srdma_peer_wait_begin();
	do {
		n = poll(&p, 1, srdma_ms_left(deadline));
	} while (n < 0 && errno == EINTR);
	srdma_peer_wait_end();
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	return 0;
}

/* The peer closed the TCP connection (with or without close_notify). */
static bool peer_closed(int e)
{
	unsigned long q = ERR_peek_error();

	return e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && q == 0) ||
	       (e == SSL_ERROR_SSL && ERR_GET_LIB(q) == ERR_LIB_SSL &&
		ERR_GET_REASON(q) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
}

int srdma_tls_handshake(SSL *ssl, bool server, int64_t deadline,
			struct srdma_err *err)
{
	char why[200];

	for (;;) {
		struct srdma_sigpipe_guard g;
		int r, e, rc;

		srdma_sigpipe_block(&g);
		ERR_clear_error();	/* a stale error would read as this one's */
		r = server ? SSL_accept(ssl) : SSL_connect(ssl);
		srdma_sigpipe_unblock(&g);

		if (r == 1)
			return 0;
		e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			rc = wait_io(ssl, e, deadline);
			if (rc == -ETIMEDOUT) {
				srdma_set_err(err, rc, "tls handshake",
					      "no handshake within the deadline");
				return rc;
			}
			if (rc) {
				srdma_set_err(err, rc, "tls handshake", "%s",
					      strerror(-rc));
				return rc;
			}
			continue;
		}
		if (peer_closed(e)) {
			ERR_clear_error();
			srdma_set_err(err, -ECONNRESET, "tls handshake",
				      "connection closed by the peer");
			return -ECONNRESET;
		}
		srdma_tls_reason(ssl, why, sizeof(why));
		srdma_set_err(err, -EPROTO, "tls handshake", "%s", why);
		return -EPROTO;
	}
}

static int io_fail(SSL *ssl, int e, const char *step, struct srdma_err *err)
{
	char why[200];

	if (peer_closed(e)) {
		ERR_clear_error();
		srdma_set_err(err, -ECONNRESET, step, "connection closed by the peer");
		return -ECONNRESET;
	}
	srdma_tls_reason(ssl, why, sizeof(why));
	srdma_set_err(err, -EPROTO, step, "%s", why);
	return -EPROTO;
}

/* Read or write exactly n bytes on a non-blocking socket, within deadline. */
static int tls_io(SSL *ssl, void *buf, size_t n, bool writing, int64_t deadline,
		  struct srdma_err *err)
{
	const char *step = writing ? "send control message" : "read control message";
	size_t done = 0;
	int late = 0;

	while (done < n) {
		struct srdma_sigpipe_guard g;
		size_t moved = 0;
		int r, e, rc;

		srdma_sigpipe_block(&g);
		r = writing ? SSL_write_ex(ssl, (char *)buf + done, n - done, &moved)
			    : SSL_read_ex(ssl, (char *)buf + done, n - done, &moved);
		srdma_sigpipe_unblock(&g);
		if (r == 1) {
			done += moved;
			continue;
		}
		e = SSL_get_error(ssl, r);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			return io_fail(ssl, e, step, err);
		/* Past the deadline a socket that stays ready (a peer sending
		 * records that carry no data) gets a few more tries, not an
		 * endless loop. */
		rc = srdma_ms_left(deadline) == 0 && ++late > 8 ? -ETIMEDOUT
								 : wait_io(ssl, e, deadline);
		if (rc) {
			srdma_set_err(err, rc, step, "%s",
				      rc != -ETIMEDOUT ? strerror(-rc) :
				      writing ? "the peer took nothing before the deadline" :
				      "no answer from the peer before the deadline");
			return rc;
		}
	}
	return 0;
}

int srdma_tls_read(SSL *ssl, void *buf, size_t n, int64_t deadline,
		   struct srdma_err *err)
{
	return tls_io(ssl, buf, n, false, deadline, err);
}

int srdma_tls_write(SSL *ssl, const void *buf, size_t n, int64_t deadline,
		    struct srdma_err *err)
{
	/* SSL_write_ex only reads buf: the cast drops const for tls_io. */
	return tls_io(ssl, (void *)buf, n, true, deadline, err);
}
