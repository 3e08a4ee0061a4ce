/* The accepting side: listener, per-connection setup, and refusals. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "srdma_internal.h"


static int bind_listen(int family, const struct sockaddr *sa, socklen_t len,
		       int *out)
{
	int one = 1, zero = 0;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* "::" serves IPv4 too. */
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, sa, len) < 0 || listen(fd, SOMAXCONN) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	*out = fd;
	return 0;
}

static int open_socket(struct srdma_listener *l, const char *addr,
		       struct srdma_err *err)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE,
	};
	struct addrinfo *res, *ai;
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%u", l->port);
	if (!addr) {
		struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
					   .sin6_port = htons(l->port),
					   .sin6_addr = IN6ADDR_ANY_INIT };
		struct sockaddr_in a4 = { .sin_family = AF_INET,
					  .sin_port = htons(l->port),
					  .sin_addr.s_addr = htonl(INADDR_ANY) };

		rc = bind_listen(AF_INET6, (struct sockaddr *)&a6, sizeof(a6), &l->fd);
		if (rc == -EAFNOSUPPORT)
			rc = bind_listen(AF_INET, (struct sockaddr *)&a4, sizeof(a4), &l->fd);
		if (rc)
			srdma_set_err(err, rc, "listen", "port %s: %s", port, strerror(-rc));
		return rc;
	}
	rc = getaddrinfo(addr, port, &hints, &res);
	if (rc) {
		srdma_set_err(err, -EINVAL, "listen", "bind address '%s': %s", addr,
			      gai_strerror(rc));
		return -EINVAL;
	}
	rc = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		rc = bind_listen(ai->ai_family, ai->ai_addr, ai->ai_addrlen, &l->fd);
		if (!rc)
			break;
	}
	freeaddrinfo(res);
	if (rc)
		srdma_set_err(err, rc, "listen", "%s port %s: %s", addr, port, strerror(-rc));
	return rc;
}

/* The port the kernel chose when asked for 0. */
static int bound_port(struct srdma_listener *l, struct srdma_err *err)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0) {
		srdma_set_err(err, -errno, "listen", "getsockname: %s", strerror(errno));
		return -errno;
	}
	l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						 : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

/* Shared mode: the pool, its SRQ and CQ, and what the connections share. */
static int make_shared(struct srdma_listener *l, const struct srdma_server_opts *o,
		       struct srdma_err *err)
{
	unsigned int max_conns;
	int rc;

	if (o->rekey_interval_ms > 0 || o->rekey) {
		srdma_set_err(err, -EINVAL, "options",
			      "rekeying is not available in shared mode (srq_slots)");
		return -EINVAL;
	}
	if (o->srq_slots < SRDMA_SRQ_MIN || o->srq_slots > SRDMA_SRQ_MAX) {
		srdma_set_err(err, -EINVAL, "options", "srq_slots %u is outside %u..%u",
			      o->srq_slots, SRDMA_SRQ_MIN, SRDMA_SRQ_MAX);
		return -EINVAL;
	}
	if ((size_t)o->srq_slots * l->shape.buf_size > ((size_t)1 << 34)) {
		srdma_set_err(err, -EINVAL, "options",
			      "a shared pool of %u slots of %zu bytes is more than 16 GiB",
			      o->srq_slots, l->shape.buf_size);
		return -EINVAL;
	}
	if (!o->rdma.send_depth)
		l->shape.send_depth = SRDMA_SHARED_SEND_DEPTH;
	max_conns = (o->max_clients ? o->max_clients : SRDMA_DEFAULT_MAX_CLIENTS) +
		    (o->max_handshakes ? o->max_handshakes : SRDMA_DEFAULT_MAX_HANDSHAKES);
	rc = srdma_shared_create(&l->shared, &l->dev, o->srq_slots, l->shape.buf_size,
				 max_conns, err);
	l->shape.sh = l->shared;
	return rc;
}

int srdma_listen(const struct srdma_server_opts *opts, struct srdma_listener **out,
		 struct srdma_err *err)
{
	struct srdma_server_opts so;
	const struct srdma_server_opts *o = &so;
	struct srdma_listener *l;
	int rc;

	rc = srdma_opts_take(&so, sizeof(so), SRDMA_SERVER_OPTS_SIZE_V1, opts,
			     "srdma_server_opts", err);
	if (!rc)
		rc = srdma_check_rdma_opts(&o->rdma, err);
	if (!rc)
		rc = srdma_check_seal(o->seal, err);
	if (rc)
		return rc;
	l = calloc(1, sizeof(*l));
	if (!l) {
		srdma_set_err(err, -ENOMEM, "listen", "out of memory");
		return -ENOMEM;
	}
	l->fd = -1;
	l->epfd = l->evfd = l->timerfd = -1;
	l->refs = 1;
	pthread_mutex_init(&l->lock, NULL);
	l->port = o->port;
	l->handshake_ms = o->handshake_ms > 0 ? o->handshake_ms : SRDMA_DEFAULT_HANDSHAKE_MS;
	l->peer_timeout_ms = srdma_peer_timeout(o->peer_timeout_ms);
	srdma_qp_shape_from_opts(&l->shape, &o->rdma);
	l->shape.seal = (enum srdma_seal_cipher)o->seal;
	l->shape.rekey_ms = o->rekey_interval_ms > 0 ? o->rekey_interval_ms : 0;
	l->shape.rekey = o->rekey || l->shape.rekey_ms;

	if (o->crl_file && !o->client_ca) {
		srdma_set_err(err, -EINVAL, "options",
			      "a CRL checks client certificates: it needs a client CA too");
		rc = -EINVAL;
		goto fail;
	}
	rc = srdma_tls_server_ctx(&l->ctx, o->cert_file, o->key_file, o->client_ca,
				  !o->no_resumption, err);
	if (!rc && o->crl_file)
		rc = srdma_tls_load_crl(l->ctx, o->crl_file, err);
	if (rc)
		goto fail;
	rc = srdma_dev_open(&l->dev, &o->rdma, err);
	if (!rc && o->srq_slots)
		rc = make_shared(l, o, err);
	if (rc)
		goto fail;
	rc = open_socket(l, o->bind_addr, err);
	if (!rc)
		rc = bound_port(l, err);
	if (!rc)
		rc = srdma_acceptor_init(l, o, err);
	if (!rc && o->prepared >= 0) {
		l->pool.spread_bits = o->qpn_spread < 0 ? 0 : o->qpn_spread ? (unsigned int)o->qpn_spread
									  : SRDMA_DEFAULT_QPN_SPREAD;
		rc = srdma_pool_start(l, o->prepared ? (unsigned int)o->prepared
						     : SRDMA_DEFAULT_PREPARED, err);
	}
	if (rc)
		goto fail;
	*out = l;
	return 0;
fail:
	srdma_listener_free(l);
	return rc;
}

uint16_t srdma_listener_port(const struct srdma_listener *l)
{
	return l->port;
}

const char *srdma_listener_device(const struct srdma_listener *l)
{
	return l->dev.name;
}

int srdma_listener_ib_port(const struct srdma_listener *l)
{
	return l->dev.port;
}

void srdma_listener_ref(struct srdma_listener *l)
{
	__atomic_add_fetch(&l->refs, 1, __ATOMIC_RELAXED);
}

void srdma_listener_unref(struct srdma_listener *l)
{
	if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL))
		return;
	srdma_shared_destroy(l->shared);
	srdma_dev_close(&l->dev);
	SSL_CTX_free(l->ctx);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

void srdma_listener_free(struct srdma_listener *l)
{
	if (!l)
		return;
	srdma_acceptor_stop(l);
	srdma_pool_stop(l);
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	srdma_listener_unref(l);
}

int srdma_accept_fd(struct srdma_listener *l, int *fd, char *addr, size_t addr_len,
		    struct srdma_err *err)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int one = 1;
	int s = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (s < 0) {
		int e = errno;

		if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
			return -EAGAIN;
		srdma_set_err(err, -e, "accept", "%s", strerror(e));
		return -e;
	}
	if (addr)
		srdma_format_addr((struct sockaddr *)&ss, addr, addr_len);
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	srdma_sock_liveness(s, l->peer_timeout_ms);
	*fd = s;
	return 0;
}

int srdma_server_start_tls(struct srdma_listener *l, int fd, int64_t deadline,
			   struct srdma_conn **out, struct srdma_err *err)
{
	struct srdma_conn *c = calloc(1, sizeof(*c));
	int rc;

	if (!c) {
		close(fd);
		srdma_set_err(err, -ENOMEM, "accept", "out of memory");
		return -ENOMEM;
	}
	c->fd = fd;
	c->server = true;
	c->listener = l;
	srdma_listener_ref(l);
	c->dev = &l->dev;
	c->shape = l->shape;
	c->peer_timeout_ms = l->peer_timeout_ms;
	c->ssl = SSL_new(l->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
		srdma_set_err(err, -ENOMEM, "tls setup", "SSL_new failed");
		srdma_conn_free(c);
		return -ENOMEM;
	}
	c->t_start = srdma_now_us();
	rc = srdma_tls_handshake(c->ssl, true, deadline, err);
	c->info.times.tls_us = srdma_us_since(c->t_start);
	if (rc) {
		srdma_conn_fill_tls_info(c);
		srdma_conn_free(c);
		return rc;
	}
	srdma_conn_fill_tls_info(c);
	*out = c;
	return 0;
}

int srdma_server_handshake(struct srdma_listener *l, int fd,
			   struct srdma_conn **out, struct srdma_err *err)
{
	int64_t deadline = srdma_now_ms() + l->handshake_ms;
	struct srdma_conn *c;
	int rc = srdma_server_start_tls(l, fd, deadline, &c, err);

	if (rc)
		return rc;
	rc = srdma_conn_setup(c, deadline, err);
	if (rc) {
		if (rc == -ETIMEDOUT) {
			srdma_ctrl_send_error(c, SRDMA_ERROR_TIMEOUT, NULL,
					      srdma_now_ms() + 500);
			srdma_conn_free(c);
		} else {
			/* An ERROR went out: let the client read it. */
			srdma_conn_linger_free(c, 500);
		}
		return rc;
	}
	*out = c;
	return 0;
}

void srdma_server_reject(struct srdma_listener *l, int fd, uint16_t code,
			 const char *text)
{
	int64_t deadline = srdma_now_ms() + l->handshake_ms;
	struct srdma_conn *c;

	if (srdma_server_start_tls(l, fd, deadline, &c, NULL))
		return;
	srdma_ctrl_send_error(c, code, text, deadline);
	srdma_conn_linger_free(c, 1000);
}

int srdma_accept(struct srdma_listener *l, int timeout_ms, struct srdma_conn **out,
		 struct srdma_err *err)
{
	int64_t deadline = timeout_ms < 0 ? -1 : srdma_now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p = { .fd = l->epfd, .events = POLLIN };
		const struct srdma_event *ev;
		int rc = srdma_listener_get_event(l, &ev);

		if (rc < 0) {
			srdma_set_err(err, rc, "accept", "%s", strerror(-rc));
			return rc;
		}
		if (rc == 1 && ev->type == SRDMA_EVENT_CONNECTED) {
			*out = ev->conn;
			return 0;
		}
		/* Checked between events too: a flood of refusals must not
		 * stretch the wait. */
		if (srdma_ms_left(deadline) == 0) {
			srdma_set_err(err, -ETIMEDOUT, "accept", "no client set up within %d ms",
				      timeout_ms);
			return -ETIMEDOUT;
		}
		if (rc == 1)
			continue;
		rc = poll(&p, 1, srdma_ms_left(deadline));
		if (rc < 0 && errno == EINTR) {
			srdma_set_err(err, -EINTR, "accept", "interrupted by a signal");
			return -EINTR;
		}
		if (rc < 0) {
			rc = -errno;
			srdma_set_err(err, rc, "accept", "poll: %s", strerror(-rc));
			return rc;
		}
		if (rc == 0) {
			srdma_set_err(err, -ETIMEDOUT, "accept", "no client set up within %d ms",
				      timeout_ms);
			return -ETIMEDOUT;
		}
	}
}
