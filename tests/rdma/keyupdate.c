#include <poll.h>
#include <stdbool.h>
#include <time.h>
#include <sys/socket.h>

#include "keyupdate.h"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *keyupdate_flood(SSL *ssl, int fd, int64_t end_ms, unsigned long *sent)
{
	bool pending = false;
	int small = 4096;

	*sent = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	while (now_ms() < end_ms) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int r;

		/* One KeyUpdate at a time: a blocked one is flushed first. */
		if (!pending && SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
			return "closed by the peer";
		r = SSL_do_handshake(ssl);
		if (r == 1) {
			pending = false;
			(*sent)++;
			continue;
		}
		if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_WRITE)
			return "closed by the peer";
		pending = true;
		if (poll(&p, 1, 200) < 0 || (p.revents & (POLLERR | POLLHUP)))
			return "closed by the peer";
	}
	return "still open at the end";
}
