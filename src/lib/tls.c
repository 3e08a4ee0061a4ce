/*
 * TLS policy and I/O (OpenSSL 3). TLS 1.2 is the floor and only AEAD suites
 * with ECDHE are offered for it; TLS 1.3 is preferred (OpenSSL negotiates the
 * highest common version). The client always verifies the server's chain and
 * name: there is no switch to turn that off. Renegotiation is disabled.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <openssl/err.h>
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
	if (SSL_set_fd(ssl, fd) != 1)
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
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	*out = ssl;
	return 0;
fail:
	srdma_tls_reason(NULL, why, sizeof(why));
	srdma_set_err(err, -EINVAL, "tls setup", "server name '%s': %s", name, why);
	SSL_free(ssl);
	return -EINVAL;
}

/* Wait for the socket as OpenSSL asked; -ETIMEDOUT past the deadline. */
static int wait_io(SSL *ssl, int ssl_err, int64_t deadline)
{
	struct pollfd p = {
		.fd = SSL_get_fd(ssl),
		.events = ssl_err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN,
	};
	int n;

	do {
		n = poll(&p, 1, srdma_ms_left(deadline));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	return 0;
}

int srdma_tls_handshake(SSL *ssl, bool server, int64_t deadline,
			struct srdma_err *err)
{
	char why[200];

	for (;;) {
		struct srdma_sigpipe_guard g;
		int r, e, rc;

		srdma_sigpipe_block(&g);
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
		if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
			srdma_set_err(err, -ECONNRESET, "tls handshake",
				      "connection closed by the peer%s",
				      errno ? "" : " (EOF)");
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

	if (e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
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
		rc = wait_io(ssl, e, deadline);
		if (rc) {
			srdma_set_err(err, rc, step, "%s",
				      rc == -ETIMEDOUT ? "timed out" : strerror(-rc));
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
