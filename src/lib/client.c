/* The connecting side. */
#include <errno.h>
#include <pthread.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <sys/random.h>

#include "srdma_internal.h"

/* Non-blocking connect to one address, within the deadline. */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int peer_timeout_ms,
		       int *out)
{
	struct pollfd p = { .events = POLLOUT };
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	int e = 0, one = 1, n;
	socklen_t el = sizeof(e);

	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS) {
			e = errno;
			close(fd);
			return -e;
		}
		p.fd = fd;
		do {
			n = poll(&p, 1, srdma_ms_left(deadline));
		} while (n < 0 && errno == EINTR);
		if (n <= 0) {
			close(fd);
			return n == 0 ? -ETIMEDOUT : -errno;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e) {
			e = e ? e : errno;
			close(fd);
			return -e;
		}
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	srdma_sock_liveness(fd, peer_timeout_ms);
	*out = fd;
	return 0;
}

static int dial(const char *host, uint16_t port, int64_t deadline, int peer_timeout_ms,
		int *fd, struct srdma_err *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	char ps[8];
	int rc;

	snprintf(ps, sizeof(ps), "%u", port);
	rc = getaddrinfo(host, ps, &hints, &res);
	if (rc) {
		srdma_set_err(err, -EHOSTUNREACH, "resolve", "%s: %s", host, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	rc = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		rc = connect_one(ai, deadline, peer_timeout_ms, fd);
		if (!rc)
			break;
	}
	freeaddrinfo(res);
	if (rc)
		srdma_set_err(err, rc, "connect", "%s port %u: %s", host, port, strerror(-rc));
	return rc;
}

/*
 * A client: the TLS context and the device, shared by its connections, and
 * with resumption on, the newest session ticket for the one server (host,
 * port, name) it last reached.
 */
struct srdma_client {
	SSL_CTX *ctx;
	struct srdma_dev *dev;
	uint16_t port;
	char *server_name;
	int handshake_ms;
	int peer_timeout_ms;	/* resolved: 0 never */
	struct srdma_qp_shape shape;
	bool resume;
	/* Connections may outlive the client: one reference for the client
	 * itself, one for each connection it made (atomic). */
	int refs;

	pthread_mutex_t lock;	/* guards the two below */
	SSL_SESSION *session;
	char *session_key;	/* "name port": where session is good */
};

int srdma_client_new(const struct srdma_client_opts *opts, struct srdma_client **out,
		     struct srdma_err *err)
{
	struct srdma_client_opts co;
	const struct srdma_client_opts *o = &co;
	struct srdma_client *cl;
	int rc;

	rc = srdma_opts_take(&co, sizeof(co), SRDMA_CLIENT_OPTS_SIZE_V1, opts,
			     "srdma_client_opts", err);
	if (!rc)
		rc = srdma_check_rdma_opts(&o->rdma, err);
	if (!rc)
		rc = srdma_check_seal(o->seal, err);
	if (rc)
		return rc;
	cl = calloc(1, sizeof(*cl));
	if (!cl || !(cl->dev = calloc(1, sizeof(*cl->dev))) ||
	    (o->server_name && !(cl->server_name = strdup(o->server_name)))) {
		if (cl) {
			free(cl->dev);
			free(cl);
		}
		srdma_set_err(err, -ENOMEM, "connect", "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&cl->lock, NULL);
	cl->refs = 1;
	cl->port = o->port ? o->port : SRDMA_DEFAULT_PORT;
	cl->handshake_ms = o->handshake_ms > 0 ? o->handshake_ms : SRDMA_DEFAULT_HANDSHAKE_MS;
	cl->peer_timeout_ms = srdma_peer_timeout(o->peer_timeout_ms);
	srdma_qp_shape_from_opts(&cl->shape, &o->rdma);
	cl->shape.seal = (enum srdma_seal_cipher)o->seal;
	cl->shape.rekey_ms = o->rekey_interval_ms > 0 ? o->rekey_interval_ms : 0;
	cl->shape.rekey = o->rekey || cl->shape.rekey_ms;
	cl->resume = o->resume != 0;

	rc = srdma_tls_client_ctx(&cl->ctx, o->ca_file, o->cert_file, o->key_file, err);
	if (!rc && o->crl_file)
		rc = srdma_tls_load_crl(cl->ctx, o->crl_file, err);
	if (!rc && cl->resume)
		srdma_tls_client_enable_tickets(cl->ctx);
	if (!rc)
		rc = srdma_dev_open(cl->dev, &o->rdma, err);	/* leaves nothing open on failure */
	if (rc) {
		srdma_client_free(cl);
		return rc;
	}
	*out = cl;
	return 0;
}

void srdma_client_unref(struct srdma_client *cl)
{
	if (__atomic_sub_fetch(&cl->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (cl->dev) {
		srdma_dev_close(cl->dev);
		free(cl->dev);
	}
	SSL_CTX_free(cl->ctx);
	SSL_SESSION_free(cl->session);
	free(cl->session_key);
	free(cl->server_name);
	pthread_mutex_destroy(&cl->lock);
	free(cl);
}

void srdma_client_free(struct srdma_client *cl)
{
	if (cl)
		srdma_client_unref(cl);
}

/* A connection's ticket: keep it for the next connect to the same place. */
struct ticket_ctx {
	struct srdma_client *cl;
	const char *key;
};

static void keep_ticket(void *arg, SSL_SESSION *sess)
{
	struct ticket_ctx *t = arg;
	char *key = strdup(t->key);

	if (!key) {
		SSL_SESSION_free(sess);
		return;
	}
	pthread_mutex_lock(&t->cl->lock);
	SSL_SESSION_free(t->cl->session);
	free(t->cl->session_key);
	t->cl->session = sess;
	t->cl->session_key = key;
	pthread_mutex_unlock(&t->cl->lock);
}

/* Offer the kept session if it was made for this very name and port. */
static void offer_ticket(struct srdma_client *cl, SSL *ssl, const char *key)
{
	pthread_mutex_lock(&cl->lock);
	if (cl->session && strcmp(cl->session_key, key) == 0)
		SSL_set_session(ssl, cl->session);	/* takes its own reference */
	pthread_mutex_unlock(&cl->lock);
}

/* One connection, set up before deadline (absolute, srdma_now_ms()). */
static int connect_until(struct srdma_client *cl, const char *host, int64_t deadline,
			 struct srdma_conn **out, struct srdma_err *err)
{
	const char *name = cl->server_name ? cl->server_name : host;
	struct ticket_ctx tc = { .cl = cl };
	char key[300];
	struct srdma_conn *c;
	int64_t t0;
	uint32_t tls_us;
	int rc;

	if (!host || !*host) {
		srdma_set_err(err, -EINVAL, "options", "no server host given");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		srdma_set_err(err, -ENOMEM, "connect", "out of memory");
		return -ENOMEM;
	}
	c->fd = -1;
	c->dev = cl->dev;
	c->shape = cl->shape;
	c->peer_timeout_ms = cl->peer_timeout_ms;
	c->t_start = srdma_now_us();

	/* TLS first, as far as it goes without the server: the ClientHello
	 * goes out the moment TCP is connected. */
	rc = srdma_tls_client_ssl(cl->ctx, -1, name, &c->ssl, err);
	if (rc)
		goto fail;
	if (cl->resume) {
		/* Keyed by the dialled host too: a name alone could point a
		 * session at another address serving the same certificate. */
		snprintf(key, sizeof(key), "%s %s %u", host, name, cl->port);
		tc.key = key;
		offer_ticket(cl, c->ssl, key);
		if (srdma_tls_set_ticket_sink(c->ssl, keep_ticket, &tc)) {
			srdma_set_err(err, -ENOMEM, "tls setup", "out of memory");
			rc = -ENOMEM;
			goto fail;
		}
	}
	t0 = srdma_now_us();
	rc = srdma_tls_client_first_flight(c->ssl, err);
	tls_us = srdma_us_since(t0);
	if (rc)
		goto fail;
	t0 = srdma_now_us();
	rc = dial(host, cl->port, deadline, cl->peer_timeout_ms, &c->fd, err);
	c->info.times.tcp_us = srdma_us_since(t0);
	if (rc)
		goto fail;
	t0 = srdma_now_us();
	rc = srdma_tls_client_attach(c->ssl, c->fd, deadline, err);
	tls_us += srdma_us_since(t0);
	if (rc)
		goto fail;
	/* Our QP while the server works on its answer: off the critical
	 * path (its PSN comes after TLS, which exporter mode needs). */
	t0 = srdma_now_us();
	rc = srdma_verbs_create(c, false, err);
	c->info.times.qp_create_us = srdma_us_since(t0);
	if (rc)
		goto fail;
	t0 = srdma_now_us();
	rc = srdma_tls_handshake(c->ssl, false, deadline, err);
	c->info.times.tls_us = tls_us + srdma_us_since(t0);
	if (rc)
		goto fail;
	srdma_conn_fill_tls_info(c);
	rc = srdma_conn_setup(c, deadline, err);
	if (rc)
		goto fail;
	/* tc lives on this stack: no ticket may reach it after we return. */
	srdma_tls_set_ticket_sink(c->ssl, NULL, NULL);
	c->client = cl;
	__atomic_add_fetch(&cl->refs, 1, __ATOMIC_RELAXED);
	*out = c;
	return 0;
fail:
	c->dev = NULL;
	srdma_conn_free(c);
	return rc;
}

int srdma_client_connect(struct srdma_client *cl, const char *host,
			 struct srdma_conn **out, struct srdma_err *err)
{
	return connect_until(cl, host, srdma_now_ms() + cl->handshake_ms, out, err);
}

int srdma_connect(const struct srdma_client_opts *o, const char *host,
		  struct srdma_conn **out, struct srdma_err *err)
{
	struct srdma_client_opts one;
	struct srdma_client *cl;
	int rc;

	if (!host || !*host) {
		srdma_set_err(err, -EINVAL, "options", "no server host given");
		return -EINVAL;
	}
	rc = srdma_opts_take(&one, sizeof(one), SRDMA_CLIENT_OPTS_SIZE_V1, o,
			     "srdma_client_opts", err);
	if (rc)
		return rc;
	one.resume = 0;
	rc = srdma_client_new(&one, &cl, err);
	if (rc)
		return rc;
	rc = srdma_client_connect(cl, host, out, err);
	/* A connection keeps the client (its device) alive till it closes. */
	srdma_client_free(cl);
	return rc;
}

/* Sleep ms, or less when a signal handler runs: -EINTR then. */
static int backoff_sleep(int ms)
{
	if (poll(NULL, 0, ms) < 0 && errno == EINTR)
		return -EINTR;
	return 0;
}

int srdma_client_reconnect(struct srdma_client *cl, const char *host, int timeout_ms,
			   struct srdma_conn **out, unsigned int *attempts, struct srdma_err *err)
{
	int64_t deadline = timeout_ms < 0 ? -1 : srdma_now_ms() + timeout_ms;
	int step = SRDMA_RETRY_MIN_MS;
	unsigned int tries = 0;
	int rc;

	for (;;) {
		int64_t until = srdma_now_ms() + cl->handshake_ms;
		uint32_t r = 0;
		int wait;

		/* No attempt runs past the overall deadline. */
		if (deadline >= 0 && deadline < until)
			until = deadline;
		tries++;
		rc = connect_until(cl, host, until, out, err);
		if (attempts)
			*attempts = tries;
		if (rc == 0 || rc == -ENOMEM || !host || !*host)
			return rc;	/* done, or trying again cannot help */
		/* Exponential backoff with jitter (half to all of the step), so
		 * that clients a restart dropped together do not come back in
		 * step; never past the deadline. */
		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = 0;
		wait = step / 2 + (int)(r % (uint32_t)(step / 2 + 1));
		if (deadline >= 0 && srdma_ms_left(deadline) < wait) {
			if (srdma_ms_left(deadline) == 0) {
				char why[sizeof(err->msg)];

				if (err) {
					snprintf(why, sizeof(why), "%s", err->msg);
					snprintf(err->msg, sizeof(err->msg),
						 "gave up after %u attempts in %d ms; the last: %.180s",
						 tries, timeout_ms, why);
					err->code = -ETIMEDOUT;
				}
				return -ETIMEDOUT;
			}
			wait = srdma_ms_left(deadline);
		}
		if (backoff_sleep(wait)) {
			srdma_set_err(err, -EINTR, "reconnect", "interrupted by a signal after %u attempts",
				      tries);
			return -EINTR;
		}
		step = step * 2 > SRDMA_RETRY_MAX_MS ? SRDMA_RETRY_MAX_MS : step * 2;
	}
}
