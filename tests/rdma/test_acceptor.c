/*
 * The library's acceptor (srdma_listener_get_event, srdma_accept): the
 * client cap with "server full", setups capped with silent ones evicted
 * and a storm of real clients queued, never evicted,
 * deadlines, signals, and connections that outlive their listener. A
 * server and clients in one process on the device's loopback; needs an
 * RDMA device. Each defence here was seen to fail its test when removed.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <cmocka.h>

#include "pair.h"

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* A client dialling from a thread of its own. */
struct dial {
	struct srdma_listener *l;
	struct srdma_client *cl;	/* set: dial with it */
	pthread_t t;
	struct srdma_conn *c;
	struct srdma_err err;
	int rc;
};

static void *dial_thread(void *p)
{
	struct dial *d = p;
	struct srdma_client_opts co;

	srdma_client_opts_init(&co);
	co.port = srdma_listener_port(d->l);
	co.ca_file = SRDMA_TEST_CERTS "/ca.pem";
	d->rc = d->cl ? srdma_client_connect(d->cl, "localhost", &d->c, &d->err)
		      : srdma_connect(&co, "localhost", &d->c, &d->err);
	return NULL;
}

static void dial_start_with(struct dial *d, struct srdma_listener *l, struct srdma_client *cl)
{
	memset(d, 0, sizeof(*d));
	d->l = l;
	d->cl = cl;
	assert_int_equal(pthread_create(&d->t, NULL, dial_thread, d), 0);
}

static void dial_start(struct dial *d, struct srdma_listener *l)
{
	dial_start_with(d, l, NULL);
}

static void dial_join(struct dial *d)
{
	pthread_join(d->t, NULL);
	if (d->rc)
		print_message("client: %s: %s (peer code %u)\n", d->err.step, d->err.msg,
			      d->err.peer_code);
}

/* Drive the acceptor until it has an event, for up to ms; NULL if none. */
static const struct srdma_event *next_event(struct srdma_listener *l, int ms)
{
	long long end = now_ms() + ms;

	for (;;) {
		struct pollfd p = { .fd = srdma_listener_fd(l), .events = POLLIN };
		const struct srdma_event *ev;
		int rc = srdma_listener_get_event(l, &ev);

		assert_true(rc >= 0);
		if (rc == 1) {
			print_message("event %d, client %u from %s%s%s%s%s\n", ev->type, ev->id,
				      ev->peer_addr, ev->type == SRDMA_EVENT_CONNECTED ? "" : ": ",
				      ev->type == SRDMA_EVENT_CONNECTED ? "" : ev->err.step,
				      ev->type == SRDMA_EVENT_CONNECTED ? "" : ": ",
				      ev->type == SRDMA_EVENT_CONNECTED ? "" : ev->err.msg);
			return ev;
		}
		if (now_ms() >= end)
			return NULL;
		poll(&p, 1, (int)(end - now_ms()));
	}
}

static struct srdma_listener_stats stats(struct srdma_listener *l)
{
	struct srdma_listener_stats st;

	srdma_listener_stats(l, &st, sizeof(st));
	return st;
}

/* A TCP connection that never says a word. */
static int silent_socket(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* max_clients holds: one more is told "server full" over TLS; once a slot
 * is free again the next client gets in (the control: it was the cap). */
static void client_cap_says_server_full(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l;
	const struct srdma_event *ev;
	struct srdma_conn *s1;
	struct dial d1, d2, d3;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.max_clients = 1;
	l = pair_listen_opts(&so);
	assert_int_not_equal(srdma_listener_port(l), 0);

	dial_start(&d1, l);
	ev = next_event(l, 30000);
	assert_non_null(ev);
	assert_int_equal(ev->type, SRDMA_EVENT_CONNECTED);
	s1 = ev->conn;
	/* "ip:port", an IPv4 peer shown as IPv4 even on a dual-stack socket. */
	assert_string_equal(ev->peer_addr, srdma_conn_info(s1)->peer_addr);
	assert_null(strstr(ev->peer_addr, "::ffff:"));
	dial_join(&d1);
	assert_int_equal(d1.rc, 0);
	assert_int_equal(stats(l).clients, 1);

	dial_start(&d2, l);
	ev = next_event(l, 30000);
	assert_non_null(ev);
	assert_int_equal(ev->type, SRDMA_EVENT_REFUSED);
	dial_join(&d2);
	assert_int_not_equal(d2.rc, 0);
	assert_int_equal(d2.err.peer_code, SRDMA_ERROR_SERVER_FULL);
	assert_int_equal(stats(l).refused, 1);

	/* Control: a closed connection frees its place. */
	srdma_conn_close(s1, 0, NULL);
	assert_int_equal(stats(l).clients, 0);
	dial_start(&d3, l);
	ev = next_event(l, 30000);
	assert_non_null(ev);
	assert_int_equal(ev->type, SRDMA_EVENT_CONNECTED);
	dial_join(&d3);
	assert_int_equal(d3.rc, 0);
	srdma_conn_close(ev->conn, 0, NULL);
	srdma_conn_close(d1.c, 0, NULL);
	srdma_conn_close(d3.c, 0, NULL);
	srdma_listener_free(l);
}

/* Connections that never say a word hold at most max_handshakes setups,
 * each for silent_ms; one more evicts the one silent longest, none is
 * dropped while evicted setups are still ending (more than the listener
 * has records for arrive at once), and a real client still gets in.
 * Without eviction, twelve silent connections would hold twelve. */
static void silent_setups_are_capped_and_evicted(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l;
	const struct srdma_event *ev;
	unsigned int evicted[16], n_evicted = 0;
	int fds[12];
	struct dial d;
	long long end;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.max_handshakes = 2;
	so.handshake_ms = 60000;
	so.silent_ms = 200;
	l = pair_listen_opts(&so);
	for (int i = 0; i < 12; i++)
		fds[i] = silent_socket(srdma_listener_port(l));
	end = now_ms() + 30000;
	while (n_evicted < 10 && now_ms() < end) {
		ev = next_event(l, 1000);
		assert_true(stats(l).handshakes <= 2);
		if (!ev)
			continue;
		assert_int_equal(ev->type, SRDMA_EVENT_FAILED);
		assert_int_equal(ev->err.code, -ECANCELED);
		evicted[n_evicted++] = ev->id;
	}
	assert_int_equal(n_evicted, 10);
	/* The last may still wait for an evicted setup's record. */
	end = now_ms() + 10000;
	while (stats(l).accepted < 12 && now_ms() < end)
		assert_null(next_event(l, 100));
	assert_int_equal(stats(l).accepted, 12);
	assert_int_equal(stats(l).handshakes, 2);
	assert_int_equal(stats(l).evicted, 10);
	assert_int_equal(stats(l).failed, 10);	/* the evictions, nothing dropped */
	/* Silent longest first (they may end in any order). */
	for (unsigned int i = 0; i < 10; i++)
		assert_true(evicted[i] >= 1 && evicted[i] <= 10);

	dial_start(&d, l);
	do {
		ev = next_event(l, 30000);
		assert_non_null(ev);
	} while (ev->type == SRDMA_EVENT_FAILED && ev->err.code == -ECANCELED);
	assert_int_equal(ev->type, SRDMA_EVENT_CONNECTED);
	dial_join(&d);
	assert_int_equal(d.rc, 0);
	srdma_conn_close(ev->conn, 0, NULL);
	srdma_conn_close(d.c, 0, NULL);
	for (int i = 0; i < 12; i++)
		close(fds[i]);
	srdma_listener_free(l);
}

/*
 * A storm: more real clients at once than max_handshakes, behind silent
 * connections. The silent ones are evicted; no real client is (the ones
 * that find every setup taken wait in the accept queue), so all of them
 * get in. The control, run once: with the 0.2 policy (one more evicts the
 * oldest setup, spoken or not) real clients are evicted here and the test
 * fails at the first FAILED event for a dialler.
 */
#define STORM 8
#define STORM_SILENT 4
static void a_storm_evicts_the_silent_not_the_slow(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l;
	const struct srdma_event *ev;
	struct srdma_conn *conns[STORM];
	unsigned int connected = 0, evicted = 0;
	struct dial d[STORM];
	int fds[STORM_SILENT];
	long long end;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.max_handshakes = 2;
	so.max_clients = STORM;
	so.handshake_ms = 60000;
	so.silent_ms = 300;
	l = pair_listen_opts(&so);
	/* In the accept queue first: ids 1..STORM_SILENT. */
	for (int i = 0; i < STORM_SILENT; i++)
		fds[i] = silent_socket(srdma_listener_port(l));
	for (int i = 0; i < STORM; i++)
		dial_start(&d[i], l);
	end = now_ms() + 120000;
	while ((connected < STORM || evicted < STORM_SILENT) && now_ms() < end) {
		ev = next_event(l, 1000);
		assert_true(stats(l).handshakes <= 2);
		if (!ev)
			continue;
		if (ev->type == SRDMA_EVENT_CONNECTED) {
			assert_true(ev->id > STORM_SILENT);
			conns[connected++] = ev->conn;
			continue;
		}
		assert_int_equal(ev->type, SRDMA_EVENT_FAILED);
		assert_int_equal(ev->err.code, -ECANCELED);
		/* Only a silent connection is evicted, never a dialler. */
		assert_true(ev->id <= STORM_SILENT);
		evicted++;
	}
	print_message("%u connected, %u evicted, %llu waits for room\n", connected, evicted,
		      stats(l).waits);
	assert_int_equal(connected, STORM);
	assert_int_equal(evicted, STORM_SILENT);
	assert_int_equal(stats(l).failed, STORM_SILENT);
	assert_true(stats(l).waits >= 1);
	for (int i = 0; i < STORM; i++) {
		dial_join(&d[i]);
		assert_int_equal(d[i].rc, 0);
		srdma_conn_close(d[i].c, 0, NULL);
		srdma_conn_close(conns[i], 0, NULL);
	}
	for (int i = 0; i < STORM_SILENT; i++)
		close(fds[i]);
	srdma_listener_free(l);
}

/*
 * Connections that send one byte and then nothing (a slow-loris) are not
 * silent, but their setups stall on them: past stall_ms one is evicted for
 * a newcomer, and a real client gets in behind four of them with two
 * setups. The control, run once: with stalled setups never evicted (the
 * first 0.3 policy), the client waits for handshake_ms (60 s) and this
 * test fails at its 30 s wait.
 */
static void a_byte_then_nothing_is_evicted(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l;
	const struct srdma_event *ev;
	unsigned int stalled = 0;
	struct srdma_conn *sc = NULL;
	int fds[4];
	struct dial d;
	long long end;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.max_handshakes = 2;
	so.handshake_ms = 60000;
	so.stall_ms = 300;
	l = pair_listen_opts(&so);
	for (int i = 0; i < 4; i++) {
		fds[i] = silent_socket(srdma_listener_port(l));
		assert_int_equal(write(fds[i], "\x16", 1), 1);	/* a TLS record begins */
	}
	dial_start(&d, l);
	end = now_ms() + 30000;
	while (!sc && now_ms() < end) {
		ev = next_event(l, 1000);
		if (!ev)
			continue;
		if (ev->type == SRDMA_EVENT_CONNECTED) {
			/* Kept until the client is done: a BYE now would reach
			 * it before its own setup has finished. */
			assert_int_equal(ev->id, 5);
			sc = ev->conn;
			continue;
		}
		assert_int_equal(ev->type, SRDMA_EVENT_FAILED);
		assert_int_equal(ev->err.code, -ECANCELED);
		assert_non_null(strstr(ev->err.msg, "stalled"));
		assert_true(ev->id <= 4);
		stalled++;
	}
	print_message("%u stalled setups evicted before the client got in\n", stalled);
	assert_non_null(sc);
	assert_true(stalled >= 1);
	dial_join(&d);
	assert_int_equal(d.rc, 0);
	srdma_conn_close(d.c, 0, NULL);
	srdma_conn_close(sc, 0, NULL);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	srdma_listener_free(l);
}

/* Setups take QPs prepared ahead by the listener's thread (and work with
 * them: echo over the QP); with prepared -1 none is made (the control, so
 * that the count cannot come from anywhere else). */
static void setups_take_prepared_qps(void **state)
{
	(void)state;
	for (int prepared = 2; prepared >= -1; prepared -= 3) {
		struct srdma_server_opts so;
		struct srdma_listener *l;

		pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
		so.prepared = prepared;
		l = pair_listen_opts(&so);
		for (int i = 0; i < 3; i++) {
			struct srdma_conn *sc, *cc;
			struct ibv_wc wc;

			/* The thread's moment to refill: the count below
			 * says only whether a set was there, not how fast. */
			usleep(200000);
			pair_connect(l, SRDMA_PSN_EXCHANGE, &sc, &cc);
			pair_send(cc, sc, "through a prepared QP", 21, &wc);
			assert_int_equal(wc.byte_len, 21);
			srdma_conn_close(cc, 0, NULL);
			srdma_conn_close(sc, 0, NULL);
		}
		print_message("prepared %d: %llu of 3 setups took a prepared QP\n", prepared,
			      stats(l).prepared_used);
		if (prepared > 0)
			assert_true(stats(l).prepared_used >= 1);
		else
			assert_int_equal(stats(l).prepared_used, 0);
		srdma_listener_free(l);
	}
}

/* A setup that misses handshake_ms fails on its own, reported as such. */
static void setup_deadline_holds(void **state)
{
	struct srdma_server_opts so;
	struct srdma_listener *l;
	const struct srdma_event *ev;
	long long t0;
	int fd;

	(void)state;
	pair_server_opts(&so, SRDMA_PSN_EXCHANGE);
	so.handshake_ms = 500;
	l = pair_listen_opts(&so);
	fd = silent_socket(srdma_listener_port(l));
	t0 = now_ms();
	ev = next_event(l, 20000);
	assert_non_null(ev);
	print_message("failed after %lld ms\n", now_ms() - t0);
	assert_int_equal(ev->type, SRDMA_EVENT_FAILED);
	assert_int_equal(ev->err.code, -ETIMEDOUT);
	assert_string_equal(ev->err.step, "tls handshake");
	assert_int_equal(stats(l).handshakes, 0);
	assert_int_equal(stats(l).failed, 1);
	close(fd);
	srdma_listener_free(l);
}

/* Whether every thread but this one blocks sig (from /proc). */
static bool other_threads_block(int sig, int *others)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	bool all = true;

	assert_non_null(d);
	*others = 0;
	while ((e = readdir(d))) {
		char path[300], line[256];
		unsigned long long blk = 0;
		FILE *f;

		if (e->d_name[0] == '.' || atoi(e->d_name) == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;	/* ended meanwhile */
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "SigBlk: %llx", &blk) == 1)
				break;
		fclose(f);
		(*others)++;
		if (!(blk & (1ULL << (sig - 1))))
			all = false;
	}
	closedir(d);
	return all;
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

/* A program's signals reach its own threads, never the library's, and
 * srdma_accept() returns on one (so a server can stop on SIGINT); without a
 * client it returns at its timeout. */
static void signals_are_the_callers(void **state)
{
	struct sigaction sa = { .sa_handler = on_alarm };	/* no SA_RESTART */
	struct itimerval it = { .it_value = { .tv_usec = 300000 } };
	struct srdma_listener *l;
	struct srdma_conn *c = NULL;
	struct srdma_err err;
	long long t0;
	int fd, others = 0;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	t0 = now_ms();
	assert_int_equal(srdma_accept(l, 300, &c, &err), -ETIMEDOUT);
	assert_true(now_ms() - t0 >= 250);

	/* A setup in progress: its thread blocks what the program handles. */
	fd = silent_socket(srdma_listener_port(l));
	t0 = now_ms();
	while (stats(l).handshakes == 0 && now_ms() - t0 < 10000) {
		const struct srdma_event *ev;

		assert_int_equal(srdma_listener_get_event(l, &ev), 0);
		usleep(10000);
	}
	assert_int_equal(stats(l).handshakes, 1);
	assert_true(other_threads_block(SIGINT, &others));
	assert_true(other_threads_block(SIGTERM, &others));
	assert_true(other_threads_block(SIGALRM, &others));
	assert_true(others >= 1);

	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
	t0 = now_ms();
	assert_int_equal(srdma_accept(l, 10000, &c, &err), -EINTR);
	print_message("accept: %s: %s after %lld ms\n", err.step, err.msg, now_ms() - t0);
	assert_int_equal(alarms, 1);
	assert_true(now_ms() - t0 < 5000);
	signal(SIGALRM, SIG_DFL);
	close(fd);
	srdma_listener_free(l);
}

/* Freeing the listener and the client first leaves their connections
 * whole: they still carry traffic and close cleanly (ASan sees any use
 * after free). */
static void connections_outlive_listener_and_client(void **state)
{
	struct srdma_client_opts co;
	struct srdma_client *cl;
	struct srdma_listener *l;
	const struct srdma_event *ev;
	struct srdma_conn *s, *c;
	struct srdma_err err;
	struct ibv_wc wc;
	struct dial d;

	(void)state;
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	srdma_client_opts_init(&co);
	co.port = srdma_listener_port(l);
	co.ca_file = SRDMA_TEST_CERTS "/ca.pem";
	assert_int_equal(srdma_client_new(&co, &cl, &err), 0);
	dial_start_with(&d, l, cl);
	ev = next_event(l, 30000);
	assert_non_null(ev);
	assert_int_equal(ev->type, SRDMA_EVENT_CONNECTED);
	s = ev->conn;
	dial_join(&d);
	assert_int_equal(d.rc, 0);
	c = d.c;
	srdma_listener_free(l);
	srdma_client_free(cl);

	pair_send(c, s, "8 bytes!", 8, &wc);
	srdma_conn_close(s, 0, NULL);
	srdma_conn_close(c, 0, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(client_cap_says_server_full),
		cmocka_unit_test(silent_setups_are_capped_and_evicted),
		cmocka_unit_test(a_storm_evicts_the_silent_not_the_slow),
		cmocka_unit_test(a_byte_then_nothing_is_evicted),
		cmocka_unit_test(setups_take_prepared_qps),
		cmocka_unit_test(setup_deadline_holds),
		cmocka_unit_test(signals_are_the_callers),
		cmocka_unit_test(connections_outlive_listener_and_client),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
