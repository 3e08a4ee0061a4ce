/* The connecting side. */
#include <errno.h>
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

/* Non-blocking connect to one address, within the deadline. */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int *out)
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
	*out = fd;
	return 0;
}

static int dial(const char *host, uint16_t port, int64_t deadline, int *fd,
		struct srdma_err *err)
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
		rc = connect_one(ai, deadline, fd);
		if (!rc)
			break;
	}
	freeaddrinfo(res);
	if (rc)
		srdma_set_err(err, rc, "connect", "%s port %u: %s", host, port, strerror(-rc));
	return rc;
}

int srdma_connect(const struct srdma_client_opts *o, const char *host,
		  struct srdma_conn **out, struct srdma_err *err)
{
	int64_t deadline = srdma_now_ms() +
		(o->handshake_ms > 0 ? o->handshake_ms : SRDMA_DEFAULT_HANDSHAKE_MS);
	SSL_CTX *ctx = NULL;
	struct srdma_conn *c;
	int rc;

	if (!host || !*host) {
		srdma_set_err(err, -EINVAL, "options", "no server host given");
		return -EINVAL;
	}
	rc = srdma_check_rdma_opts(&o->rdma, err);
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c || !(c->dev = calloc(1, sizeof(*c->dev)))) {
		free(c);
		srdma_set_err(err, -ENOMEM, "connect", "out of memory");
		return -ENOMEM;
	}
	c->fd = -1;
	c->buf_size = o->rdma.buf_size ? o->rdma.buf_size : SRDMA_DEFAULT_BUF_SIZE;
	c->psn_mode = o->rdma.psn_mode;

	rc = srdma_tls_client_ctx(&ctx, o->ca_file, o->cert_file, o->key_file, err);
	if (rc)
		goto fail;
	rc = srdma_dev_open(c->dev, &o->rdma, err);
	if (rc)
		goto fail;
	c->own_dev = true;
	rc = dial(host, o->port ? o->port : SRDMA_DEFAULT_PORT, deadline, &c->fd, err);
	if (rc)
		goto fail;
	rc = srdma_tls_client_ssl(ctx, c->fd, o->server_name ? o->server_name : host,
				  &c->ssl, err);
	if (rc)
		goto fail;
	rc = srdma_tls_handshake(c->ssl, false, deadline, err);
	if (rc)
		goto fail;
	srdma_conn_fill_tls_info(c);
	rc = srdma_conn_setup(c, deadline, err);
	if (rc)
		goto fail;
	SSL_CTX_free(ctx);	/* the SSL holds its own reference */
	*out = c;
	return 0;
fail:
	if (!c->own_dev)
		free(c->dev);
	srdma_conn_free(c);
	SSL_CTX_free(ctx);
	return rc;
}
