/*
 * Unit tests for the TLS policy in src/lib/tls.c (no RDMA device needed).
 *
 * Each handshake runs over a socketpair(AF_UNIX, SOCK_STREAM) with both ends
 * non-blocking: the server side in a thread (srdma_tls_handshake(ssl, true)),
 * the client side in the test thread. The certificates come from
 * scripts/make-certs, run into a temporary directory by the group setup.
 *
 * A handshake is run to the end and everything freed before any assertion,
 * so that a failing assertion (a longjmp in cmocka) never leaves a thread
 * running on a dead stack frame.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "srdma.h"
#include "srdma_internal.h"

#ifndef SRDMA_SOURCE_DIR
#error "SRDMA_SOURCE_DIR must name the source tree (see tests/CMakeLists.txt)"
#endif

#define HANDSHAKE_MS 5000
#define ECHO_LEN 37

static char cert_dir[] = "/tmp/srdma-test-tls-XXXXXX";

/* The path of a file in cert_dir; a few results may be live at once. */
static const char *cert(const char *name)
{
	static char bufs[8][PATH_MAX];
	static unsigned int next;
	char *b = bufs[next++ % 8];

	snprintf(b, PATH_MAX, "%s/%s", cert_dir, name);
	return b;
}

static int make_certs(void **state)
{
	char cmd[PATH_MAX * 2];

	(void)state;
	/* A test that writes to a closed peer must fail, not die. */
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(cert_dir)) {
		perror("mkdtemp");
		return -1;
	}
	snprintf(cmd, sizeof(cmd), "'%s/scripts/make-certs' '%s' >/dev/null",
		 SRDMA_SOURCE_DIR, cert_dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "test_tls: '%s' failed\n", cmd);
		return -1;
	}
	return 0;
}

static int remove_certs(void **state)
{
	char cmd[PATH_MAX + 32];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", cert_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int64_t deadline(void)
{
	return srdma_now_ms() + HANDSHAKE_MS;
}

/* What to do after a successful client handshake. */
enum after {
	AFTER_NOTHING,
	/* Client writes ECHO_LEN bytes, server echoes them, client compares. */
	AFTER_ECHO,
	/*
	 * Server handshake first; then the client reads 1 byte. With TLS 1.3
	 * the client's handshake can finish before the server has judged the
	 * client's certificate, so a refusal may only show up here.
	 */
	AFTER_PROBE,
};

struct server {
	SSL_CTX *ctx;
	int fd;
	int64_t deadline;
	enum after after;
	int rc;			/* srdma_tls_handshake */
	struct srdma_err err;
	int version;
	bool peer_cert;
	long verify;
	int echo_rc;
};

/* Everything the tests look at, collected before the resources are freed. */
struct outcome {
	int setup_rc;		/* srdma_tls_client_ssl (or SSL_new) */
	struct srdma_err setup_err;
	int rc;			/* client srdma_tls_handshake */
	struct srdma_err err;
	long verify;
	int version;
	bool aead;
	char cipher[64];
	int echo_rc;		/* AFTER_ECHO: round trip result */
	struct srdma_err echo_err;
	int probe_rc;		/* AFTER_PROBE: 1-byte read result */
	struct srdma_err probe_err;
	struct server srv;
};

static void *server_main(void *arg)
{
	struct server *s = arg;
	unsigned char buf[ECHO_LEN];
	SSL *ssl = SSL_new(s->ctx);

	if (!ssl || SSL_set_fd(ssl, s->fd) != 1) {
		s->rc = -ENOMEM;
		snprintf(s->err.msg, sizeof(s->err.msg), "SSL_new/SSL_set_fd");
		goto out;
	}
	s->rc = srdma_tls_handshake(ssl, true, s->deadline, &s->err);
	s->verify = SSL_get_verify_result(ssl);
	if (s->rc) {
		/* The alert (if any) is queued; EOF after it unblocks the client. */
		shutdown(s->fd, SHUT_WR);
		goto out;
	}
	s->version = SSL_version(ssl);
	s->peer_cert = SSL_get0_peer_certificate(ssl) != NULL;
	if (s->after == AFTER_ECHO) {
		s->echo_rc = srdma_tls_read(ssl, buf, sizeof(buf), s->deadline,
					    &s->err);
		if (!s->echo_rc)
			s->echo_rc = srdma_tls_write(ssl, buf, sizeof(buf),
						     s->deadline, &s->err);
	}
out:
	SSL_free(ssl);
	ERR_clear_error();
	return NULL;
}

static int nonblocking_pair(int fds[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
		return -errno;
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) || fcntl(fds[1], F_SETFL, O_NONBLOCK)) {
		int rc = -errno;

		close(fds[0]);
		close(fds[1]);
		return rc;
	}
	return 0;
}

static void client_echo(SSL *ssl, struct outcome *o)
{
	unsigned char out[ECHO_LEN], in[ECHO_LEN];
	int64_t dl = deadline();
	size_t i;

	for (i = 0; i < sizeof(out); i++)
		out[i] = (unsigned char)(i * 7 + 3);
	memset(in, 0, sizeof(in));
	o->echo_rc = srdma_tls_write(ssl, out, sizeof(out), dl, &o->echo_err);
	if (!o->echo_rc)
		o->echo_rc = srdma_tls_read(ssl, in, sizeof(in), dl, &o->echo_err);
	if (!o->echo_rc && memcmp(in, out, sizeof(in)))
		o->echo_rc = -EBADMSG;
}

/*
 * One handshake: server_ctx in a thread, client from client_ctx in this one.
 * name non-NULL: the client SSL comes from srdma_tls_client_ssl(name); NULL:
 * a plain SSL_new(client_ctx) (for the non-srdma clients).
 */
static void handshake(SSL_CTX *server_ctx, SSL_CTX *client_ctx,
		      const char *name, enum after after, struct outcome *o)
{
	pthread_t th;
	SSL *ssl = NULL;
	int fds[2];
	int rc;

	memset(o, 0, sizeof(*o));
	o->setup_rc = o->rc = o->echo_rc = o->probe_rc = -EINVAL;
	rc = nonblocking_pair(fds);
	if (rc) {
		o->setup_rc = rc;
		snprintf(o->setup_err.msg, sizeof(o->setup_err.msg), "socketpair");
		return;
	}
	o->srv.ctx = server_ctx;
	o->srv.fd = fds[1];
	o->srv.deadline = deadline();
	o->srv.after = after;
	o->srv.rc = o->srv.echo_rc = -EINVAL;
	rc = pthread_create(&th, NULL, server_main, &o->srv);
	if (rc) {
		o->setup_rc = -rc;
		snprintf(o->setup_err.msg, sizeof(o->setup_err.msg), "pthread_create");
		goto close_fds;
	}

	if (name) {
		o->setup_rc = srdma_tls_client_ssl(client_ctx, fds[0], name, &ssl,
						   &o->setup_err);
	} else {
		ssl = SSL_new(client_ctx);
		o->setup_rc = ssl && SSL_set_fd(ssl, fds[0]) == 1 ? 0 : -ENOMEM;
	}
	if (!o->setup_rc) {
		o->rc = srdma_tls_handshake(ssl, false, deadline(), &o->err);
		o->verify = SSL_get_verify_result(ssl);
		if (!o->rc) {
			const SSL_CIPHER *c = SSL_get_current_cipher(ssl);

			o->version = SSL_version(ssl);
			o->aead = c && SSL_CIPHER_is_aead(c);
			snprintf(o->cipher, sizeof(o->cipher), "%s",
				 c ? SSL_CIPHER_get_name(c) : "(none)");
			if (after == AFTER_ECHO)
				client_echo(ssl, o);
		}
	}
	if (o->setup_rc || o->rc || after == AFTER_ECHO)
		shutdown(fds[0], SHUT_WR);	/* the server must not wait for us */
	pthread_join(th, NULL);
	if (!o->setup_rc && !o->rc && after == AFTER_PROBE) {
		unsigned char b;

		o->probe_rc = srdma_tls_read(ssl, &b, 1, srdma_now_ms() + 1000,
					     &o->probe_err);
	}
	SSL_free(ssl);
	ERR_clear_error();
close_fds:
	close(fds[0]);
	close(fds[1]);
}

static SSL_CTX *server_ctx(const char *cert_name, const char *key_name,
			   const char *client_ca)
{
	struct srdma_err err = { 0 };
	SSL_CTX *ctx = NULL;
	int rc;

	rc = srdma_tls_server_ctx(&ctx, cert(cert_name), cert(key_name),
				  client_ca ? cert(client_ca) : NULL, true, &err);
	if (rc)
		fail_msg("srdma_tls_server_ctx(%s): %s: %s", cert_name, err.step,
			 err.msg);
	assert_non_null(ctx);
	return ctx;
}

static SSL_CTX *client_ctx(const char *ca, const char *cert_name,
			   const char *key_name)
{
	struct srdma_err err = { 0 };
	SSL_CTX *ctx = NULL;
	int rc;

	rc = srdma_tls_client_ctx(&ctx, cert(ca),
				  cert_name ? cert(cert_name) : NULL,
				  key_name ? cert(key_name) : NULL, &err);
	if (rc)
		fail_msg("srdma_tls_client_ctx(%s): %s: %s", ca, err.step, err.msg);
	assert_non_null(ctx);
	return ctx;
}

/* A plain OpenSSL client that does not verify: the server's policy alone
 * decides. */
static SSL_CTX *plain_client(int max_version, const char *ciphers, int level)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	assert_non_null(ctx);
	SSL_CTX_set_security_level(ctx, level);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	if (ciphers)
		assert_int_equal(SSL_CTX_set_cipher_list(ctx, ciphers), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

/* A plain OpenSSL server with server.pem, for the client-side floor. */
static SSL_CTX *plain_server(int max_version, const char *ciphers, int level)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	assert_non_null(ctx);
	SSL_CTX_set_security_level(ctx, level);
	assert_int_equal(SSL_CTX_set_min_proto_version(ctx, 0), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	if (ciphers)
		assert_int_equal(SSL_CTX_set_cipher_list(ctx, ciphers), 1);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert("server.pem")), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, cert("server.key"),
						     SSL_FILETYPE_PEM), 1);
	return ctx;
}

#define assert_accepted(o) do {							\
	assert_int_equal((o)->setup_rc, 0);					\
	if ((o)->rc || (o)->srv.rc)						\
		fail_msg("handshake refused: client %d %s: %s / server %d %s: %s", \
			 (o)->rc, (o)->err.step, (o)->err.msg, (o)->srv.rc,	\
			 (o)->srv.err.step, (o)->srv.err.msg);			\
} while (0)

#define assert_refused(o) do {							\
	assert_int_equal((o)->setup_rc, 0);					\
	if ((o)->rc == 0 || (o)->srv.rc == 0)					\
		fail_msg("handshake not refused on both ends: client %d, server %d", \
			 (o)->rc, (o)->srv.rc);					\
	assert_int_not_equal((o)->rc, -ETIMEDOUT);				\
	assert_int_not_equal((o)->srv.rc, -ETIMEDOUT);				\
} while (0)

#define assert_msg_has(msg, s) do {						\
	if (!strstr((msg), (s)))						\
		fail_msg("'%s' does not contain '%s'", (msg), (s));		\
} while (0)

/* 1 */
static void default_handshake_is_tls13_verified_and_carries_data(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	struct outcome o;

	(void)state;
	handshake(sctx, cctx, "localhost", AFTER_ECHO, &o);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);

	assert_accepted(&o);
	assert_int_equal(o.version, TLS1_3_VERSION);
	assert_int_equal(o.srv.version, TLS1_3_VERSION);
	assert_int_equal(o.verify, X509_V_OK);
	assert_true(o.aead);
	assert_int_equal(o.srv.echo_rc, 0);
	if (o.echo_rc)
		fail_msg("round trip: %d %s: %s", o.echo_rc, o.echo_err.step,
			 o.echo_err.msg);
	/* No client certificate was asked for or sent. */
	assert_false(o.srv.peer_cert);
}

/* 2 */
static void server_refuses_tls11_accepts_tls12_aead(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *c11 = plain_client(TLS1_1_VERSION, NULL, 0);
	SSL_CTX *c12 = plain_client(TLS1_2_VERSION, NULL, 0);
	struct outcome old, ok;
	long floor = SSL_CTX_get_min_proto_version(sctx);

	(void)state;
	handshake(sctx, c11, NULL, AFTER_NOTHING, &old);
	handshake(sctx, c12, NULL, AFTER_ECHO, &ok);
	SSL_CTX_free(c12);
	SSL_CTX_free(c11);
	SSL_CTX_free(sctx);

	/*
	 * OpenSSL 3's default security level 1 refuses TLS 1.1 by itself, so
	 * check the floor is the policy's own, not an accident of defaults.
	 */
	assert_int_equal(floor, TLS1_2_VERSION);
	assert_refused(&old);
	assert_msg_has(old.srv.err.msg, "unsupported protocol");

	assert_accepted(&ok);
	assert_int_equal(ok.version, TLS1_2_VERSION);
	if (!ok.aead)
		fail_msg("TLS 1.2 negotiated non-AEAD cipher %s", ok.cipher);
	assert_int_equal(ok.echo_rc, 0);
}

/* 3 */
static void server_refuses_tls12_cbc_accepts_gcm(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *cbc = plain_client(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA256", 1);
	SSL_CTX *gcm = plain_client(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", 1);
	struct outcome bad, ok;

	(void)state;
	handshake(sctx, cbc, NULL, AFTER_NOTHING, &bad);
	handshake(sctx, gcm, NULL, AFTER_ECHO, &ok);
	SSL_CTX_free(gcm);
	SSL_CTX_free(cbc);
	SSL_CTX_free(sctx);

	assert_refused(&bad);
	assert_msg_has(bad.srv.err.msg, "no shared cipher");

	assert_accepted(&ok);
	assert_int_equal(ok.version, TLS1_2_VERSION);
	assert_string_equal(ok.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");
	assert_int_equal(ok.echo_rc, 0);
}

/* The client's half of the floor: an srdma client will not talk TLS 1.1 or
 * a CBC suite to a server that offers nothing better. */
static void client_refuses_tls11_and_cbc_servers(void **state)
{
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	SSL_CTX *s11 = plain_server(TLS1_1_VERSION, NULL, 0);
	SSL_CTX *scbc = plain_server(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA256", 1);
	SSL_CTX *s12 = plain_server(TLS1_2_VERSION, NULL, 1);
	struct outcome old, cbc, ok;

	(void)state;
	handshake(s11, cctx, "localhost", AFTER_NOTHING, &old);
	handshake(scbc, cctx, "localhost", AFTER_NOTHING, &cbc);
	handshake(s12, cctx, "localhost", AFTER_ECHO, &ok);
	SSL_CTX_free(s12);
	SSL_CTX_free(scbc);
	SSL_CTX_free(s11);
	SSL_CTX_free(cctx);

	assert_refused(&old);
	assert_refused(&cbc);
	/* Control: a TLS 1.2 server with its default suites is fine. */
	assert_accepted(&ok);
	assert_int_equal(ok.version, TLS1_2_VERSION);
	assert_true(ok.aead);
	assert_int_equal(ok.echo_rc, 0);
}

/* 4 (control: case 1) */
static void client_refuses_server_from_other_ca(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *cctx = client_ctx("other-ca.pem", NULL, NULL);
	struct outcome o;

	(void)state;
	handshake(sctx, cctx, "localhost", AFTER_NOTHING, &o);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);

	assert_refused(&o);
	assert_int_equal(o.rc, -EPROTO);
	assert_string_equal(o.err.step, "tls handshake");
	assert_int_equal(o.verify, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
	assert_msg_has(o.err.msg, X509_verify_cert_error_string(o.verify));
}

/* 5 */
static void client_checks_server_name_and_ip(void **state)
{
	static const struct {
		const char *name;
		long verify;	/* X509_V_OK: accepted */
	} cases[] = {
		{ "localhost", X509_V_OK },
		{ "not-in-cert.example", X509_V_ERR_HOSTNAME_MISMATCH },
		{ "127.0.0.1", X509_V_OK },
		{ "192.0.2.1", X509_V_ERR_IP_ADDRESS_MISMATCH },
		{ "::1", X509_V_OK },
		{ "10.77.0.2", X509_V_OK },
		/* An IPv6 address not in the cert; a name only under one. */
		{ "::2", X509_V_ERR_IP_ADDRESS_MISMATCH },
		{ "sub.localhost", X509_V_ERR_HOSTNAME_MISMATCH },
	};
	struct outcome o[sizeof(cases) / sizeof(cases[0])];
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		handshake(sctx, cctx, cases[i].name, AFTER_NOTHING, &o[i]);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("name %s: client %d (%s), verify %ld\n",
			      cases[i].name, o[i].rc, o[i].err.msg, o[i].verify);
		if (cases[i].verify == X509_V_OK) {
			assert_accepted(&o[i]);
		} else {
			assert_refused(&o[i]);
			assert_msg_has(o[i].err.msg,
				       X509_verify_cert_error_string(cases[i].verify));
		}
		assert_int_equal(o[i].verify, cases[i].verify);
	}
}

/* 6 */
static void client_refuses_expired_server_cert(void **state)
{
	SSL_CTX *expired = server_ctx("expired-server.pem", "expired-server.key", NULL);
	SSL_CTX *fresh = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	struct outcome bad, ok;

	(void)state;
	handshake(expired, cctx, "localhost", AFTER_NOTHING, &bad);
	handshake(fresh, cctx, "localhost", AFTER_NOTHING, &ok);
	SSL_CTX_free(cctx);
	SSL_CTX_free(fresh);
	SSL_CTX_free(expired);

	assert_refused(&bad);
	assert_int_equal(bad.verify, X509_V_ERR_CERT_HAS_EXPIRED);
	assert_msg_has(bad.err.msg, "expired");

	assert_accepted(&ok);
	assert_int_equal(ok.verify, X509_V_OK);
}

/* A client refused by the server: the failure shows up in the client's
 * handshake or in its first read (TLS 1.3), but it shows up. */
static void assert_client_refused_by_server(const struct outcome *o)
{
	assert_int_equal(o->setup_rc, 0);
	if (o->srv.rc == 0)
		fail_msg("server accepted the client");
	assert_int_not_equal(o->srv.rc, -ETIMEDOUT);
	if (o->rc == 0) {
		if (o->probe_rc == 0)
			fail_msg("client read data after a refused handshake");
		assert_int_not_equal(o->probe_rc, -ETIMEDOUT);
	}
}

/* 7 */
static void mutual_tls_requires_client_cert_from_ca(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", "ca.pem");
	SSL_CTX *none = client_ctx("ca.pem", NULL, NULL);
	SSL_CTX *other = client_ctx("ca.pem", "other-client.pem", "other-client.key");
	SSL_CTX *good = client_ctx("ca.pem", "client.pem", "client.key");
	struct outcome o_none, o_other, o_good;

	(void)state;
	handshake(sctx, none, "localhost", AFTER_PROBE, &o_none);
	handshake(sctx, other, "localhost", AFTER_PROBE, &o_other);
	handshake(sctx, good, "localhost", AFTER_ECHO, &o_good);
	SSL_CTX_free(good);
	SSL_CTX_free(other);
	SSL_CTX_free(none);
	SSL_CTX_free(sctx);

	print_message("no cert: client %d/%d, server %d (%s)\n", o_none.rc,
		      o_none.probe_rc, o_none.srv.rc, o_none.srv.err.msg);
	print_message("other CA: client %d/%d, server %d (%s)\n", o_other.rc,
		      o_other.probe_rc, o_other.srv.rc, o_other.srv.err.msg);
	assert_client_refused_by_server(&o_none);
	assert_false(o_none.srv.peer_cert);

	assert_client_refused_by_server(&o_other);
	assert_int_equal(o_other.srv.verify, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
	assert_msg_has(o_other.srv.err.msg,
		       X509_verify_cert_error_string(o_other.srv.verify));

	assert_accepted(&o_good);
	assert_true(o_good.srv.peer_cert);
	assert_int_equal(o_good.srv.verify, X509_V_OK);
	assert_int_equal(o_good.echo_rc, 0);
	assert_int_equal(o_good.srv.echo_rc, 0);
}

/* 8 */
static void ctx_construction_errors(void **state)
{
	SSL_CTX *sentinel = (SSL_CTX *)&sentinel;
	SSL_CTX *ctx;
	struct srdma_err err;
	char missing[PATH_MAX];
	int rc;

	(void)state;
	/* A copy: cert()'s buffers are reused. */
	snprintf(missing, sizeof(missing), "%s", cert("no-such-cert.pem"));
	/* Controls: the same calls with good arguments work. */
	ctx = NULL;
	assert_int_equal(srdma_tls_client_ctx(&ctx, cert("ca.pem"), cert("client.pem"),
					      cert("client.key"), &err), 0);
	assert_non_null(ctx);
	SSL_CTX_free(ctx);
	ctx = NULL;
	assert_int_equal(srdma_tls_server_ctx(&ctx, cert("server.pem"),
					      cert("server.key"), cert("ca.pem"), true,
					      &err), 0);
	assert_non_null(ctx);
	SSL_CTX_free(ctx);

	/* No CA: the client cannot verify, so there is no client. */
	memset(&err, 0, sizeof(err));
	ctx = sentinel;
	rc = srdma_tls_client_ctx(&ctx, NULL, NULL, NULL, &err);
	assert_true(rc < 0);
	assert_int_equal(err.code, rc);
	assert_true(err.step[0] != '\0');
	assert_true(err.msg[0] != '\0');
	assert_ptr_equal(ctx, sentinel);

	/* A certificate without its key, and a key without its certificate. */
	memset(&err, 0, sizeof(err));
	rc = srdma_tls_client_ctx(&ctx, cert("ca.pem"), cert("client.pem"), NULL, &err);
	assert_true(rc < 0);
	assert_true(err.step[0] != '\0');
	memset(&err, 0, sizeof(err));
	rc = srdma_tls_client_ctx(&ctx, cert("ca.pem"), NULL, cert("client.key"), &err);
	assert_true(rc < 0);
	assert_true(err.step[0] != '\0');
	memset(&err, 0, sizeof(err));
	rc = srdma_tls_server_ctx(&ctx, cert("server.pem"), NULL, NULL, true, &err);
	assert_true(rc < 0);
	assert_true(err.step[0] != '\0');
	assert_ptr_equal(ctx, sentinel);

	/* A key that is not the certificate's. */
	memset(&err, 0, sizeof(err));
	rc = srdma_tls_server_ctx(&ctx, cert("server.pem"), cert("client.key"),
				  NULL, true, &err);
	print_message("mismatched key: %s: %s\n", err.step, err.msg);
	assert_true(rc < 0);
	assert_int_equal(err.code, rc);
	assert_string_equal(err.step, "load private key");
	/* OpenSSL's own check ("key values mismatch") or tls.c's. */
	if (!strstr(err.msg, "mismatch") && !strstr(err.msg, "does not match"))
		fail_msg("'%s' does not say the key does not match", err.msg);
	assert_ptr_equal(ctx, sentinel);

	/* The same mismatch on the client's certificate. */
	memset(&err, 0, sizeof(err));
	rc = srdma_tls_client_ctx(&ctx, cert("ca.pem"), cert("client.pem"),
				  cert("server.key"), &err);
	assert_true(rc < 0);
	if (!strstr(err.msg, "mismatch") && !strstr(err.msg, "does not match"))
		fail_msg("'%s' does not say the key does not match", err.msg);

	/* Missing files are named. */
	memset(&err, 0, sizeof(err));
	rc = srdma_tls_server_ctx(&ctx, missing, cert("server.key"), NULL, true, &err);
	print_message("missing cert: %s: %s\n", err.step, err.msg);
	assert_true(rc < 0);
	assert_string_equal(err.step, "load certificate");
	assert_msg_has(err.msg, missing);

	memset(&err, 0, sizeof(err));
	rc = srdma_tls_client_ctx(&ctx, missing, NULL, NULL, &err);
	assert_true(rc < 0);
	assert_msg_has(err.msg, missing);

	memset(&err, 0, sizeof(err));
	rc = srdma_tls_server_ctx(&ctx, cert("server.pem"), cert("server.key"),
				  missing, true, &err);
	assert_true(rc < 0);
	assert_msg_has(err.msg, missing);
	assert_ptr_equal(ctx, sentinel);
}

/* 9 */
static void handshake_times_out_on_silent_peer(void **state)
{
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	struct srdma_err cerr = { 0 }, serr = { 0 };
	int64_t t0, c_ms, s_ms;
	SSL *cssl = NULL, *sssl;
	int fds[2], setup, crc, src;

	(void)state;
	assert_int_equal(nonblocking_pair(fds), 0);

	/* Client against a server that never answers. */
	setup = srdma_tls_client_ssl(cctx, fds[0], "localhost", &cssl, &cerr);
	t0 = srdma_now_ms();
	crc = setup ? setup : srdma_tls_handshake(cssl, false, t0 + 300, &cerr);
	c_ms = srdma_now_ms() - t0;

	/* Server against a client that never says hello (fresh pair). */
	sssl = SSL_new(sctx);
	close(fds[0]);
	close(fds[1]);
	if (nonblocking_pair(fds)) {
		fds[0] = fds[1] = -1;
		src = -EBADF;
	} else {
		SSL_set_fd(sssl, fds[1]);
		t0 = srdma_now_ms();
		src = srdma_tls_handshake(sssl, true, t0 + 300, &serr);
	}
	s_ms = srdma_now_ms() - t0;

	SSL_free(sssl);
	SSL_free(cssl);
	close(fds[0]);
	close(fds[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	ERR_clear_error();

	assert_int_equal(setup, 0);
	assert_int_equal(crc, -ETIMEDOUT);
	assert_int_equal(cerr.code, -ETIMEDOUT);
	assert_string_equal(cerr.step, "tls handshake");
	print_message("client timed out after %lld ms, server after %lld ms\n",
		      (long long)c_ms, (long long)s_ms);
	assert_true(c_ms >= 250 && c_ms < 2000);

	assert_int_equal(src, -ETIMEDOUT);
	assert_int_equal(serr.code, -ETIMEDOUT);
	assert_true(s_ms >= 250 && s_ms < 2000);
}

/* 10: resumption */

/* The ticket sink of a test client: keeps the newest. */
static void keep_session(void *arg, SSL_SESSION *sess)
{
	SSL_SESSION **slot = arg;

	SSL_SESSION_free(*slot);
	*slot = sess;
}

struct resumed {
	int rc;			/* client handshake (then echo) */
	bool reused;		/* client saw an abbreviated handshake */
	bool server_peer_cert;	/* server saw a client certificate */
	SSL_SESSION *ticket;	/* what the server issued, or NULL */
};

/* One connection: offer (may be NULL), an echo so the ticket arrives. */
static void connect_once(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *offer,
			 struct resumed *r)
{
	struct outcome o;
	pthread_t th;
	SSL *ssl = NULL;
	int fds[2];

	memset(r, 0, sizeof(*r));
	memset(&o, 0, sizeof(o));
	r->rc = -EINVAL;
	assert_int_equal(nonblocking_pair(fds), 0);
	o.srv = (struct server){ .ctx = sctx, .fd = fds[1], .deadline = deadline(),
				 .after = AFTER_ECHO, .rc = -EINVAL };
	assert_int_equal(pthread_create(&th, NULL, server_main, &o.srv), 0);
	assert_int_equal(srdma_tls_client_ssl(cctx, fds[0], "localhost", &ssl, &o.err), 0);
	if (offer)
		assert_int_equal(SSL_set_session(ssl, offer), 1);
	assert_int_equal(srdma_tls_set_ticket_sink(ssl, keep_session, &r->ticket), 0);
	r->rc = srdma_tls_handshake(ssl, false, deadline(), &o.err);
	if (!r->rc) {
		r->reused = SSL_session_reused(ssl) == 1;
		client_echo(ssl, &o);
		r->rc = o.echo_rc;
		/* Without a close_notify OpenSSL marks the session (and so the
		 * ticket) not resumable, as the library's close sends one. */
		SSL_shutdown(ssl);
	}
	shutdown(fds[0], SHUT_WR);
	pthread_join(th, NULL);
	r->server_peer_cert = o.srv.peer_cert;
	srdma_tls_set_ticket_sink(ssl, NULL, NULL);
	SSL_free(ssl);
	close(fds[0]);
	close(fds[1]);
	ERR_clear_error();
}

static SSL_CTX *server_ctx_without_tickets(void)
{
	struct srdma_err err = { 0 };
	SSL_CTX *ctx = NULL;

	assert_int_equal(srdma_tls_server_ctx(&ctx, cert("server.pem"), cert("server.key"),
					      NULL, false, &err), 0);
	return ctx;
}

/* A full handshake leaves one ticket with the client, which then resumes
 * on the server that sealed it. */
static void full_then_resumed(SSL_CTX *sctx, SSL_CTX *cctx, struct resumed *full,
			      struct resumed *again)
{
	srdma_tls_client_enable_tickets(cctx);
	connect_once(sctx, cctx, NULL, full);
	assert_int_equal(full->rc, 0);
	assert_false(full->reused);
	assert_non_null(full->ticket);
	connect_once(sctx, cctx, full->ticket, again);
	assert_int_equal(again->rc, 0);
	assert_true(again->reused);
}

static void resumption_needs_this_servers_ticket(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *other = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *plain = server_ctx_without_tickets();
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	struct resumed full, again, elsewhere, none;

	(void)state;
	full_then_resumed(sctx, cctx, &full, &again);
	assert_non_null(again.ticket);	/* a resumed session brings another */

	/* Another server with the same certificate cannot open the ticket
	 * (its ticket key is its own): a full, verified handshake instead. */
	connect_once(other, cctx, full.ticket, &elsewhere);
	assert_int_equal(elsewhere.rc, 0);
	assert_false(elsewhere.reused);

	/* A server with resumption off issues nothing and resumes nothing. */
	connect_once(plain, cctx, full.ticket, &none);
	assert_int_equal(none.rc, 0);
	assert_false(none.reused);
	assert_null(none.ticket);

	SSL_SESSION_free(full.ticket);
	SSL_SESSION_free(again.ticket);
	SSL_SESSION_free(elsewhere.ticket);
	SSL_CTX_free(sctx);
	SSL_CTX_free(other);
	SSL_CTX_free(plain);
	SSL_CTX_free(cctx);
}

/* With mutual TLS a resumed session still carries the client certificate
 * it was verified with (and needs the server's session id context). */
static void resumption_keeps_the_client_certificate(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", "ca.pem");
	SSL_CTX *cctx = client_ctx("ca.pem", "client.pem", "client.key");
	struct resumed full, again;

	(void)state;
	full_then_resumed(sctx, cctx, &full, &again);
	assert_true(full.server_peer_cert);
	assert_true(again.server_peer_cert);
	SSL_SESSION_free(full.ticket);
	SSL_SESSION_free(again.ticket);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

/* 11: no tickets for TLS 1.2 */

/* TLS 1.2 resumption runs no key exchange: a ticket key read from memory
 * later would open every recorded resumed session. So a TLS 1.2 client
 * gets no ticket, and one it offers is not taken. Control: TLS 1.3 from
 * the same server gets a ticket and resumes with it. */
static void tls12_gets_no_ticket(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *c12 = client_ctx("ca.pem", NULL, NULL);
	SSL_CTX *c13 = client_ctx("ca.pem", NULL, NULL);
	struct resumed full12, again12, full13, again13;

	(void)state;
	assert_int_equal(SSL_CTX_set_max_proto_version(c12, TLS1_2_VERSION), 1);
	full_then_resumed(sctx, c13, &full13, &again13);	/* control */
	srdma_tls_client_enable_tickets(c12);
	connect_once(sctx, c12, NULL, &full12);
	assert_int_equal(full12.rc, 0);
	print_message("TLS 1.2: session %s, ticket %s\n", full12.ticket ? "kept" : "none",
		      full12.ticket && SSL_SESSION_has_ticket(full12.ticket) ? "yes" : "no");
	assert_true(!full12.ticket || !SSL_SESSION_has_ticket(full12.ticket));
	if (full12.ticket) {	/* a session without a ticket resumes nothing */
		connect_once(sctx, c12, full12.ticket, &again12);
		assert_int_equal(again12.rc, 0);
		assert_false(again12.reused);
		SSL_SESSION_free(again12.ticket);
	}
	SSL_SESSION_free(full12.ticket);
	SSL_SESSION_free(full13.ticket);
	SSL_SESSION_free(again13.ticket);
	SSL_CTX_free(c12);
	SSL_CTX_free(c13);
	SSL_CTX_free(sctx);
}

/* 12: the ticket key is replaced; the one before opens tickets for one
 * more period, then is gone. (A client offers each ticket once: OpenSSL
 * clients do not resume twice from one TLS 1.3 ticket.) */
static void ticket_key_rotates(void **state)
{
	SSL_CTX *sctx = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	struct resumed a, b, a2, b_late, a3;

	(void)state;
	srdma_tls_client_enable_tickets(cctx);
	connect_once(sctx, cctx, NULL, &a);	/* two tickets under key 1 */
	connect_once(sctx, cctx, NULL, &b);
	assert_int_equal(a.rc, 0);
	assert_int_equal(b.rc, 0);
	assert_non_null(a.ticket);
	assert_non_null(b.ticket);
	/* A ticket lives one rotation period, no more. */
	assert_int_equal(SSL_SESSION_get_ticket_lifetime_hint(a.ticket), SRDMA_TICKET_PERIOD_S);

	/* Key 2: key 1 still opens its tickets (the control). */
	assert_int_equal(srdma_tls_rotate_ticket_key(sctx), 0);
	connect_once(sctx, cctx, a.ticket, &a2);
	assert_int_equal(a2.rc, 0);
	assert_true(a2.reused);
	assert_non_null(a2.ticket);	/* sealed under key 2 */

	/* Key 3: key 1 is wiped, its ticket buys a full handshake; key 2's
	 * ticket still resumes. */
	assert_int_equal(srdma_tls_rotate_ticket_key(sctx), 0);
	connect_once(sctx, cctx, b.ticket, &b_late);
	assert_int_equal(b_late.rc, 0);
	assert_false(b_late.reused);
	connect_once(sctx, cctx, a2.ticket, &a3);
	assert_int_equal(a3.rc, 0);
	assert_true(a3.reused);

	SSL_SESSION_free(a.ticket);
	SSL_SESSION_free(b.ticket);
	SSL_SESSION_free(a2.ticket);
	SSL_SESSION_free(b_late.ticket);
	SSL_SESSION_free(a3.ticket);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

/* 13: a name counts only in subjectAltName. Control: server.pem, with
 * DNS:localhost there, is accepted by the same client. */
static void client_needs_subject_alt_name(void **state)
{
	SSL_CTX *cn_only = server_ctx("cn-only-server.pem", "cn-only-server.key", NULL);
	SSL_CTX *san = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *cctx = client_ctx("ca.pem", NULL, NULL);
	struct outcome bad, ok;

	(void)state;
	handshake(cn_only, cctx, "localhost", AFTER_NOTHING, &bad);
	handshake(san, cctx, "localhost", AFTER_NOTHING, &ok);
	SSL_CTX_free(cctx);
	SSL_CTX_free(san);
	SSL_CTX_free(cn_only);

	print_message("CN=localhost, no SAN: client %d (%s)\n", bad.rc, bad.err.msg);
	assert_refused(&bad);
	assert_int_equal(bad.verify, X509_V_ERR_HOSTNAME_MISMATCH);
	assert_accepted(&ok);
}

static SSL_CTX *with_crl(SSL_CTX *ctx)
{
	struct srdma_err err = { 0 };

	if (srdma_tls_load_crl(ctx, cert("crl.pem"), &err))
		fail_msg("load CRL: %s: %s", err.step, err.msg);
	return ctx;
}

/* 14: --crl on the client. Controls: the revoked certificate is accepted
 * without the CRL, and a good one is accepted with it. */
static void client_refuses_revoked_server(void **state)
{
	SSL_CTX *revoked = server_ctx("revoked-server.pem", "revoked-server.key", NULL);
	SSL_CTX *good = server_ctx("server.pem", "server.key", NULL);
	SSL_CTX *plain = client_ctx("ca.pem", NULL, NULL);
	SSL_CTX *checked = with_crl(client_ctx("ca.pem", NULL, NULL));
	struct outcome bad, without, ok;
	struct srdma_err err = { 0 };
	SSL_CTX *ctx = client_ctx("ca.pem", NULL, NULL);

	(void)state;
	handshake(revoked, checked, "localhost", AFTER_NOTHING, &bad);
	handshake(revoked, plain, "localhost", AFTER_NOTHING, &without);
	handshake(good, checked, "localhost", AFTER_NOTHING, &ok);
	SSL_CTX_free(checked);
	SSL_CTX_free(plain);
	SSL_CTX_free(good);
	SSL_CTX_free(revoked);

	print_message("revoked server: client %d (%s)\n", bad.rc, bad.err.msg);
	assert_refused(&bad);
	assert_int_equal(bad.verify, X509_V_ERR_CERT_REVOKED);
	assert_msg_has(bad.err.msg, "revoked");
	assert_accepted(&without);
	assert_accepted(&ok);
	assert_int_equal(ok.verify, X509_V_OK);

	/* A file with no CRL in it is an error, named. */
	assert_int_equal(srdma_tls_load_crl(ctx, cert("ca.pem"), &err), -EINVAL);
	assert_string_equal(err.step, "load CRL");
	assert_msg_has(err.msg, "ca.pem");
	SSL_CTX_free(ctx);
}

/* 15: --crl on the server (mutual TLS). Controls as above. */
static void server_refuses_revoked_client(void **state)
{
	SSL_CTX *checked = with_crl(server_ctx("server.pem", "server.key", "ca.pem"));
	SSL_CTX *plain = server_ctx("server.pem", "server.key", "ca.pem");
	SSL_CTX *revoked = client_ctx("ca.pem", "revoked-client.pem", "revoked-client.key");
	SSL_CTX *good = client_ctx("ca.pem", "client.pem", "client.key");
	struct outcome bad, without, ok;

	(void)state;
	handshake(checked, revoked, "localhost", AFTER_PROBE, &bad);
	handshake(plain, revoked, "localhost", AFTER_ECHO, &without);
	handshake(checked, good, "localhost", AFTER_ECHO, &ok);
	SSL_CTX_free(good);
	SSL_CTX_free(revoked);
	SSL_CTX_free(plain);
	SSL_CTX_free(checked);

	print_message("revoked client: server %d (%s)\n", bad.srv.rc, bad.srv.err.msg);
	assert_client_refused_by_server(&bad);
	assert_int_equal(bad.srv.verify, X509_V_ERR_CERT_REVOKED);
	assert_accepted(&without);
	assert_accepted(&ok);
	assert_int_equal(ok.srv.verify, X509_V_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(default_handshake_is_tls13_verified_and_carries_data),
		cmocka_unit_test(server_refuses_tls11_accepts_tls12_aead),
		cmocka_unit_test(server_refuses_tls12_cbc_accepts_gcm),
		cmocka_unit_test(client_refuses_tls11_and_cbc_servers),
		cmocka_unit_test(client_refuses_server_from_other_ca),
		cmocka_unit_test(client_checks_server_name_and_ip),
		cmocka_unit_test(client_refuses_expired_server_cert),
		cmocka_unit_test(mutual_tls_requires_client_cert_from_ca),
		cmocka_unit_test(ctx_construction_errors),
		cmocka_unit_test(handshake_times_out_on_silent_peer),
		cmocka_unit_test(resumption_needs_this_servers_ticket),
		cmocka_unit_test(resumption_keeps_the_client_certificate),
		cmocka_unit_test(tls12_gets_no_ticket),
		cmocka_unit_test(ticket_key_rotates),
		cmocka_unit_test(client_needs_subject_alt_name),
		cmocka_unit_test(client_refuses_revoked_server),
		cmocka_unit_test(server_refuses_revoked_client),
	};

	return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
