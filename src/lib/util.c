/* Small helpers: error reports and deadlines. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "srdma_internal.h"

void srdma_set_err(struct srdma_err *e, int code, const char *step,
		   const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	e->code = code;
	e->peer_code = 0;
	snprintf(e->step, sizeof(e->step), "%s", step);
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

int64_t srdma_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__thread int64_t *srdma_peer_wait;

int64_t srdma_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint32_t srdma_us_since(int64_t t0)
{
	int64_t d = srdma_now_us() - t0;

	return d < 0 ? 0 : d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

int srdma_ms_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - srdma_now_ms();
	if (left < 0)
		return 0;
	return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

const char *srdma_error_name(uint16_t code)
{
	return srdma_err_code_name(code);
}

int srdma_opts_take(void *dst, size_t dst_size, size_t min_size, const void *src,
		    const char *what, struct srdma_err *err)
{
	size_t have;

	if (!src) {
		srdma_set_err(err, -EINVAL, "options", "no %s given", what);
		return -EINVAL;
	}
	memcpy(&have, src, sizeof(have));	/* size is the first field */
	if (have < min_size || have > SRDMA_OPTS_MAX_SIZE) {
		srdma_set_err(err, -EINVAL, "options",
			      "struct %s: size %zu: fill it with %s_init() first", what, have, what);
		return -EINVAL;
	}
	/* A newer header's fields: only if the caller left them all zero. */
	for (size_t i = dst_size; i < have; i++)
		if (((const unsigned char *)src)[i]) {
			srdma_set_err(err, -E2BIG, "options",
				      "struct %s sets an option this libsrdma %s does not know "
				      "(the program was built against a newer srdma.h)",
				      what, srdma_version());
			return -E2BIG;
		}
	memset(dst, 0, dst_size);
	memcpy(dst, src, have < dst_size ? have : dst_size);
	/* The copy is this library's struct now: its size says so (a second
	 * look, e.g. srdma_connect() -> srdma_client_new(), stays inside). */
	have = have < dst_size ? have : dst_size;
	memcpy(dst, &have, sizeof(have));
	return 0;
}

void srdma_sigpipe_block(struct srdma_sigpipe_guard *g)
{
	sigset_t pipe, pending;

	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE) == 1;
	pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

void srdma_sigpipe_unblock(struct srdma_sigpipe_guard *g)
{
	if (!g->was_pending) {
		/* Consume a SIGPIPE our write raised, before unblocking. */
		struct timespec zero = { 0, 0 };
		sigset_t pipe;
		int saved = errno;

		sigemptyset(&pipe);
		sigaddset(&pipe, SIGPIPE);
		while (sigtimedwait(&pipe, NULL, &zero) > 0)
			;
		errno = saved;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

void srdma_qp_shape_from_opts(struct srdma_qp_shape *s, const struct srdma_rdma_opts *o)
{
	s->buf_size = o->buf_size ? o->buf_size : SRDMA_DEFAULT_BUF_SIZE;
	s->send_depth = o->send_depth ? o->send_depth : SRDMA_SLOTS;
	s->max_inline = o->max_inline;
	s->psn_mode = o->psn_mode;
}

int srdma_check_rdma_opts(const struct srdma_rdma_opts *o, struct srdma_err *err)
{
	if (o->buf_size > SRDMA_MAX_BUF_SIZE || (o->buf_size && o->buf_size < 64)) {
		srdma_set_err(err, -EINVAL, "options", "buffer size %zu is outside 64..%u",
			      o->buf_size, SRDMA_MAX_BUF_SIZE);
		return -EINVAL;
	}
	if (o->send_depth > SRDMA_MAX_SEND_DEPTH) {
		srdma_set_err(err, -EINVAL, "options", "send queue depth %u is over %u",
			      o->send_depth, SRDMA_MAX_SEND_DEPTH);
		return -EINVAL;
	}
	if (o->max_inline > SRDMA_MAX_INLINE) {
		srdma_set_err(err, -EINVAL, "options", "inline size %u is over %u",
			      o->max_inline, SRDMA_MAX_INLINE);
		return -EINVAL;
	}
	if (o->psn_mode != SRDMA_PSN_EXCHANGE && o->psn_mode != SRDMA_PSN_EXPORTER) {
		srdma_set_err(err, -EINVAL, "options", "unknown PSN mode %d", (int)o->psn_mode);
		return -EINVAL;
	}
	return 0;
}

int srdma_check_seal(int seal, struct srdma_err *err)
{
	if (seal != SRDMA_SEAL_OFF && seal != SRDMA_SEAL_AES_256_GCM &&
	    seal != SRDMA_SEAL_CHACHA20_POLY1305) {
		srdma_set_err(err, -EINVAL, "options", "unknown seal cipher %d", seal);
		return -EINVAL;
	}
	return 0;
}

int srdma_peer_timeout(int opt_ms)
{
	if (opt_ms < 0)
		return 0;
	return opt_ms ? opt_ms : SRDMA_DEFAULT_PEER_TIMEOUT_MS;
}

void srdma_sock_liveness(int fd, int timeout_ms)
{
	/* Keepalive probes after a third of the time idle, three of them a
	 * ninth apart; unacknowledged data (a PING to a dead host) ends the
	 * connection at the full time. Best effort: a failure here leaves
	 * the library's own probe. */
	int one = 1, cnt = 3;
	int idle = timeout_ms / 3000 > 0 ? timeout_ms / 3000 : 1;
	int intvl = timeout_ms / 9000 > 0 ? timeout_ms / 9000 : 1;
	unsigned int user = (unsigned int)timeout_ms;

	if (timeout_ms <= 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof(user));
}

void srdma_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	snprintf(buf, len, "?");
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(a->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], host, sizeof(host));
			snprintf(buf, len, "%s:%u", host, ntohs(a->sin6_port));
		} else {
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			snprintf(buf, len, "[%s]:%u", host, ntohs(a->sin6_port));
		}
	}
}

int srdma_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int rc;

	/* 1 MiB of stack, not the default 8: setups run by the hundred, and
	 * a TLS handshake and QP setup need a small fraction of this. */
	if (pthread_attr_init(&attr))
		return -ENOMEM;
	pthread_attr_setstacksize(&attr, SRDMA_THREAD_STACK);
	/* The new thread inherits this mask: a signal meant for the caller's
	 * program is never delivered to one of ours. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(t, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return -rc;
}
