/*
 * srdma-client: connects to srdma-server securely and drives the connection
 * from a prompt (or from stdin when it is not a terminal).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <srdma.h>
#include "common.h"

static const char *prog = "srdma-client";
enum { OPT_RECONNECT = 256, OPT_REKEY };
static bool json, verbose, interactive;
static int op_timeout_ms = 5000;
/* --reconnect: how long to keep trying after a connection ends (0: off). */
static int reconnect_ms;

struct stats {
	unsigned long echoes, writes, failures;
	double rtt_min, rtt_max, rtt_sum;
	unsigned long long bytes;
};

struct client {
	struct srdma_client *cl;	/* CA and device loaded once; tickets kept */
	const char *host;
	struct srdma_conn *c;
	const struct srdma_conn_info *info;
	size_t bs;
	bool sealed;		/* --seal: every message sealed */
	size_t max_msg;		/* bytes a command may send (bs, less 32 sealed) */
	struct stats st;
	bool closed;
	char close_reason[320];	/* as long as check_ctrl()'s "step: msg" */
	bool close_clean;
	/* What to tell the server when we end it: 0 BYE, else ERROR(code). */
	uint16_t close_code;
	/* --reconnect: when this connection came up, whether a command has
	 * succeeded on it, and the series of reconnects it belongs to (its
	 * end, in now_us(), 0: none; the wait before the next one). */
	double connected_at;
	bool served;
	double series_end;
	int series_wait_ms;
};

/* A connection that served a command, or lasted this long, ends a series
 * of reconnects: the next loss starts a new one, with a fresh budget. */
#define RECONNECT_CALM_US 10e6

static void usage(FILE *f)
{
	fprintf(f,
"Usage: srdma-client --ca FILE [OPTIONS] HOST\n"
"\n"
"Connect to srdma-server on HOST securely: TLS (the server's certificate is\n"
"always verified, against --ca and the name dialled), random PSNs and queue\n"
"pair parameters exchanged only over TLS, an RC QP brought up with raw verbs\n"
"and checked with ibv_query_qp. Then read commands from the prompt, or from\n"
"stdin when it is not a terminal (EOF means quit).\n"
"\n"
"Options:\n"
"  -p, --port PORT        server's TLS port (default 4433)\n"
"  -a, --ca FILE          CA certificate(s) to verify the server, PEM file or\n"
"                         hashed directory (required)\n"
"  -c, --cert FILE        client certificate, for servers that require one\n"
"  -k, --key FILE         its private key\n"
"  -S, --server-name NAME name the server certificate must carry (default:\n"
"                         HOST)\n"
"  -d, --dev NAME         RDMA device (default: the first)\n"
"  -i, --ib-port N        device port (default 1)\n"
"  -g, --gid-index N      GID index (default: automatic, as the server)\n"
"  -s, --buf-size BYTES   message slot size, 64..1073741824 (default 4096)\n"
"  -t, --timeout MS       deadline for the whole setup (default 10000)\n"
"  -o, --op-timeout MS    how long a command waits for the server's answer\n"
"                         (default 5000); a server that closes or is lost is\n"
"                         noticed at once, not at this limit\n"
"  -T, --peer-timeout MS  a server silent this long, a liveness probe\n"
"                         unanswered, is declared dead (default 180000;\n"
"                         0: never)\n"
"  -r, --crl FILE         refuse a server certificate revoked in these PEM\n"
"                         CRLs (each CA of the chain needs its CRL here)\n"
"  -j, --json             one JSON object per line for every event\n"
"  -P, --psn-mode MODE    exchange (default): random PSNs sent inside TLS;\n"
"                         exporter: both PSNs derived from the TLS session,\n"
"                         none sent at all (both sides must use the same)\n"
"      --reconnect[=SECONDS]  when the connection ends (the server restarts,\n"
"                         is lost or stops responding), connect again, with\n"
"                         backoff (0.1 s doubling to 5 s, jittered), for up\n"
"                         to SECONDS (default 60): a new QP, new PSNs, the\n"
"                         TLS session resumed if the same server process is\n"
"                         still there. A command in flight when it\n"
"                         ended is reported failed, never sent again; auto\n"
"                         goes on with its next round. Connections that end\n"
"                         again at once, having served nothing (a server\n"
"                         that is full, or drops clients), share one\n"
"                         SECONDS and ever longer waits. Not after the server\n"
"                         broke the protocol\n"
SEAL_HELP
"      --rekey-interval SECONDS  rekey (as the rekey command) this often, so\n"
"                         that no QPN and PSN pair lives long enough for a\n"
"                         PSN sweep (either side may set it)\n"
"  -v, --verbose          also print PSNs, the server's rkey and window address\n"
"                         (secrets; never printed without -v, text or JSON)\n"
"  -V, --version          print the version\n"
"  -h, --help             show this help\n"
"\n"
"Commands:\n"
"  send TEXT    SEND TEXT (up to --buf-size bytes, 32 fewer sealed); the\n"
"               server echoes it; prints it and the round trip\n"
"  write TEXT   RDMA WRITE TEXT into the server's window; the server reads it\n"
"               and answers with its SHA-256, which must match\n"
"  auto [N]     N rounds (default 10) of send + write, then a summary\n"
"  rekey        move the connection to a fresh QP with new PSNs (and new\n"
"               seal keys), make before break: nothing in flight is lost\n"
"  stats        counts and round-trip times so far\n"
"  info         the connection: TLS, device, QPNs, MTU\n"
"  help         this list\n"
"  quit         say BYE and exit (also: EOF)\n"
"\n"
"Every reply from the server is checked (its kind, its exact size) before it\n"
"is used; a server that breaks the protocol is told so and disconnected.\n"
"\n"
"Exit status: 0 after quit, EOF or the server's BYE between commands; 1 when\n"
"the connection fails, is lost, or ends with a command in flight (the message\n"
"says which step and why), or --reconnect gave up; 2 on bad usage.\n");
}

static void report_error(const char *step, const char *msg)
{
	if (json) {
		printf("{\"event\":\"error\",\"step\":");
		json_string(stdout, step, strlen(step));
		printf(",\"message\":");
		json_string(stdout, msg, strlen(msg));
		printf("}\n");
	} else {
		fprintf(stderr, "%s: %s failed: %s\n", prog, step, msg);
	}
	fflush(stdout);
}

/* The session ends: why, whether that is a clean end (exit 0), and what
 * the server is told (code 0: BYE). The first reason stands. */
static void note_closed(struct client *cl, const char *reason, bool clean, uint16_t code)
{
	if (cl->closed)
		return;
	cl->closed = true;
	cl->close_clean = clean;
	cl->close_code = code;
	snprintf(cl->close_reason, sizeof(cl->close_reason), "%s", reason);
}

/* The server broke the protocol: say where, tell it, end the session. */
static void violation(struct client *cl, const char *step, const char *why)
{
	report_error(step, why);
	note_closed(cl, why, false, SRDMA_ERROR_BAD_MESSAGE);
}

/* Our QP failed: the server hears why (it may not see it on its side). */
static void qp_failed(struct client *cl, const char *step, enum ibv_wc_status st)
{
	char why[96];

	snprintf(why, sizeof(why), "client QP failed: %s", ibv_wc_status_str(st));
	report_error(step, why);
	note_closed(cl, why, false, SRDMA_ERROR_QP);
}

/* Serve the control channel: the server may have said BYE or ERROR, be
 * gone, or owe an answer to our liveness probe. */
static void check_ctrl(struct client *cl)
{
	struct srdma_err err;
	int rc = srdma_conn_poll_ctrl(cl->c, &err);
	char why[sizeof(err.step) + sizeof(err.msg) + 16];

	if (rc == 0)
		return;
	switch (rc) {
	case SRDMA_CLOSE_BYE:
		note_closed(cl, "server said bye", true, 0);
		break;
	case SRDMA_CLOSE_TIMEOUT:
		note_closed(cl, "server not responding", false, SRDMA_ERROR_NOT_RESPONDING);
		break;
	case SRDMA_CLOSE_PROTOCOL:
		snprintf(why, sizeof(why), "%s: %s", err.step, err.msg);
		note_closed(cl, why, false, SRDMA_ERROR_BAD_MESSAGE);
		break;
	default:	/* ERROR (its text), or lost */
		note_closed(cl, err.msg, false, 0);
		break;
	}
}

/* Milliseconds to wait: at most until the given deadline (-1: none) and
 * until the library must look at the control channel. */
static int wait_ms(struct client *cl, double deadline_us)
{
	int ctrl = srdma_conn_ctrl_timeout_ms(cl->c);
	int left = deadline_us < 0 ? -1 : (int)((deadline_us - now_us()) / 1000);

	if (deadline_us >= 0 && left < 0)
		left = 0;
	if (ctrl >= 0 && (left < 0 || ctrl < left))
		return ctrl;
	return left;
}

/*
 * Wait for both halves of an operation: our send's completion and the
 * server's reply (either may come first). *reply gets the reply's
 * completion. The control channel is watched all along: a server that
 * ends the connection (or is lost) fails the command at once, not at
 * --op-timeout; a command in flight then makes the end unclean.
 */
static int wait_op(struct client *cl, struct ibv_wc *reply, const char *step)
{
	double deadline = now_us() + op_timeout_ms * 1000.0;
	bool sent = false, replied = false;

	while (!sent || !replied) {
		struct pollfd p[2] = {
			{ .fd = srdma_conn_channel(cl->c)->fd, .events = POLLIN },
			{ .fd = srdma_conn_ctrl_fd(cl->c), .events = POLLIN },
		};
		struct ibv_wc wc;
		int n = srdma_conn_poll_wc(cl->c, &wc, 1);

		if (n < 0) {
			report_error(step, "completion queue error");
			note_closed(cl, "completion queue error", false, SRDMA_ERROR_QP);
			return -1;
		}
		if (n == 1) {
			if (wc.status != IBV_WC_SUCCESS) {
				qp_failed(cl, step, wc.status);
				return -1;
			}
			if (!(wc.opcode & IBV_WC_RECV)) {
				sent = true;
			} else if (replied) {
				violation(cl, step, "a second reply from the server");
				return -1;
			} else {
				*reply = wc;
				replied = true;
			}
			continue;
		}
		if (now_us() >= deadline) {
			check_ctrl(cl);
			report_error(step, cl->closed ? cl->close_reason :
				     "timed out waiting for the server");
			if (cl->closed)
				cl->close_clean = false;
			return -1;
		}
		n = poll(p, 2, wait_ms(cl, deadline));
		if (n < 0 && errno != EINTR) {
			report_error(step, strerror(errno));
			return -1;
		}
		if (n == 0 || (n > 0 && p[1].revents))
			check_ctrl(cl);
		if (cl->closed) {
			report_error(step, cl->close_reason);
			cl->close_clean = false;	/* a command was in flight */
			return -1;
		}
	}
	return 0;
}

static int post(struct client *cl, enum ibv_wr_opcode op, uint32_t len)
{
	const struct srdma_buf *b = srdma_conn_send_buf(cl->c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = len, .lkey = b->lkey };
	struct ibv_send_wr wr = {
		.wr_id = 0,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = op,
		.send_flags = IBV_SEND_SIGNALED,
	}, *bad;

	if (op == IBV_WR_RDMA_WRITE_WITH_IMM) {
		wr.wr.rdma.remote_addr = cl->info->remote_addr;
		wr.wr.rdma.rkey = cl->info->remote_rkey;
		wr.imm_data = htonl(len);
	}
	return ibv_post_send(srdma_conn_qp(cl->c), &wr, &bad);
}

static const char *imm_name(uint32_t imm)
{
	return imm == APP_IMM_ECHO ? "ECHO" : imm == APP_IMM_WRITE_ACK ? "WRITE_ACK" : "unknown";
}

/* Sealed: open the reply in place (its length already checked) and check
 * that the kind inside, which the server cannot be made to lie about, is
 * the one the immediate named. A reply that does not open ends the
 * session: the server is told SRDMA_ERROR_SEAL and why. */
static int open_reply(struct client *cl, char *in, size_t len, uint16_t want, char **msg,
		      const char *step)
{
	struct srdma_err err;
	char why[300];
	uint16_t kind;
	size_t mlen;
	void *m;

	if (srdma_conn_open(cl->c, in, len, &kind, &m, &mlen)) {
		srdma_conn_poll_ctrl(cl->c, &err);
		snprintf(why, sizeof(why), "sealed reply refused: %s", err.msg);
		report_error(step, why);
		note_closed(cl, err.msg, false, SRDMA_ERROR_SEAL);
		return -1;
	}
	if (kind != want) {
		snprintf(why, sizeof(why), "a sealed reply of kind %u where %u was due", kind,
			 want);
		violation(cl, step, why);
		return -1;
	}
	*msg = m;
	return 0;
}

/*
 * The reply in receive slot wc->wr_id, checked before anything is touched:
 * a slot we posted, a SEND with the immediate of the kind we wait for, and
 * exactly len bytes (the size that kind allows for this request). Then it
 * is copied to out (len bytes of room) and the slot reposted. Anything else
 * is the server breaking the protocol.
 */
static int take_reply(struct client *cl, const struct ibv_wc *wc, uint32_t want_imm,
		      void *out, size_t len, const char *step)
{
	char why[128];
	char *in;

	if (wc->wr_id >= SRDMA_SLOTS) {
		violation(cl, step, "a reply in a receive slot we never posted");
		return -1;
	}
	if (wc->opcode != IBV_WC_RECV || !(wc->wc_flags & IBV_WC_WITH_IMM)) {
		violation(cl, step, "a reply that is not a SEND with an immediate");
		return -1;
	}
	if (ntohl(wc->imm_data) != want_imm) {
		snprintf(why, sizeof(why), "a reply of kind %s (%u) where %s was due",
			 imm_name(ntohl(wc->imm_data)), ntohl(wc->imm_data), imm_name(want_imm));
		violation(cl, step, why);
		return -1;
	}
	if (wc->byte_len != len + (cl->sealed ? SRDMA_SEAL_OVERHEAD : 0)) {
		snprintf(why, sizeof(why), "the server's %s reply has %u bytes where %zu are due",
			 imm_name(want_imm), wc->byte_len,
			 len + (cl->sealed ? SRDMA_SEAL_OVERHEAD : 0));
		violation(cl, step, why);
		return -1;
	}
	in = (char *)srdma_conn_recv_buf(cl->c)->addr + wc->wr_id * cl->bs;
	if (cl->sealed && open_reply(cl, in, wc->byte_len, want_imm, &in, step))
		return -1;
	memcpy(out, in, len);
	if (srdma_conn_post_recv(cl->c, (unsigned int)wc->wr_id)) {
		report_error(step, "cannot post a receive");
		note_closed(cl, "cannot post a receive", false, SRDMA_ERROR_INTERNAL);
		return -1;
	}
	return 0;
}

static void add_rtt(struct stats *st, double rtt)
{
	if (st->echoes + st->writes == 1 || rtt < st->rtt_min)
		st->rtt_min = rtt;
	if (rtt > st->rtt_max)
		st->rtt_max = rtt;
	st->rtt_sum += rtt;
}

/* What a command sends, into send slot 0: the text, or sealed. */
static int stage(struct client *cl, uint16_t kind, const char *text, size_t len,
		 size_t *wire_len)
{
	const struct srdma_buf *b = srdma_conn_send_buf(cl->c);

	if (!cl->sealed) {
		memcpy(b->addr, text, len);
		*wire_len = len;
		return 0;
	}
	return srdma_conn_seal(cl->c, kind, text, len, b->addr, cl->bs, wire_len);
}

static int do_send(struct client *cl, const char *text, bool quiet)
{
	size_t len = strlen(text);
	struct ibv_wc wc;
	char *reply, *shown = NULL;
	double t0, rtt;

	size_t wire_len = len;

	if (len == 0 || len > cl->max_msg) {
		report_error("send", len ? "text longer than the buffer size" : "nothing to send");
		return -1;
	}
	reply = malloc(len);
	if (!reply)
		return -1;
	t0 = now_us();
	if (stage(cl, APP_KIND_ECHO, text, len, &wire_len) ||
	    post(cl, IBV_WR_SEND, (uint32_t)wire_len)) {
		report_error("send", "ibv_post_send failed");
		goto fail;
	}
	if (wait_op(cl, &wc, "echo") ||
	    take_reply(cl, &wc, APP_IMM_ECHO, reply, len, "echo"))
		goto fail;
	rtt = now_us() - t0;
	if (memcmp(reply, text, len)) {
		report_error("echo", "the echo differs from what was sent");
		goto fail;
	}
	cl->st.echoes++;
	cl->served = true;
	cl->st.bytes += len;
	add_rtt(&cl->st, rtt);
	if (json) {
		printf("{\"event\":\"echo\",\"data\":");
		json_string(stdout, reply, len);
		printf(",\"rtt_us\":%.1f}\n", rtt);
	} else if (!quiet) {
		/* The server's bytes, escaped: they reach a terminal. */
		shown = malloc(4 * len + 1);
		if (shown)
			printf("echo: %s (%.1f us)\n", escape_text(shown, 4 * len + 1, reply, len),
			       rtt);
	}
	fflush(stdout);
	free(shown);
	free(reply);
	return 0;
fail:
	cl->st.failures++;
	free(reply);
	return -1;
}

static int do_write(struct client *cl, const char *text, bool quiet)
{
	size_t len = strlen(text);
	unsigned char ack[APP_ACK_LEN], mine[32];
	uint32_t be;
	struct ibv_wc wc;
	double t0, rtt;
	bool ok;

	if (cl->info->remote_len == 0) {
		report_error("write", "the server offers no write window");
		return -1;
	}
	size_t wire_len = len;

	if (len == 0 || len > cl->max_msg ||
	    len + (cl->sealed ? SRDMA_SEAL_OVERHEAD : 0) > cl->info->remote_len) {
		report_error("write", len ? "text longer than the window" : "nothing to write");
		return -1;
	}
	if (sha256(text, len, mine))
		return -1;
	t0 = now_us();
	if (stage(cl, APP_KIND_WRITE, text, len, &wire_len) ||
	    post(cl, IBV_WR_RDMA_WRITE_WITH_IMM, (uint32_t)wire_len)) {
		report_error("write", "ibv_post_send failed");
		goto fail;
	}
	if (wait_op(cl, &wc, "write") ||
	    take_reply(cl, &wc, APP_IMM_WRITE_ACK, ack, sizeof(ack), "write"))
		goto fail;
	rtt = now_us() - t0;
	memcpy(&be, ack, 4);
	ok = ntohl(be) == len && memcmp(ack + 4, mine, 32) == 0;
	if (ok) {
		cl->st.writes++;
		cl->served = true;
		cl->st.bytes += len;
		add_rtt(&cl->st, rtt);
	} else {
		cl->st.failures++;
	}
	if (json)
		printf("{\"event\":\"write\",\"bytes\":%zu,\"ok\":%s,\"rtt_us\":%.1f}\n", len,
		       ok ? "true" : "false", rtt);
	else if (!ok)
		fprintf(stderr, "%s: write failed: the server read something else "
			"(SHA-256 mismatch)\n", prog);
	else if (!quiet)
		printf("write: %zu bytes, server confirmed (SHA-256 match, %.1f us)\n", len, rtt);
	fflush(stdout);
	return ok ? 0 : -1;
fail:
	cl->st.failures++;
	return -1;
}

static void print_connected(const struct srdma_conn_info *i);

/* What the session needs to know of a (new) connection. */
static void adopt(struct client *cl)
{
	cl->info = srdma_conn_info(cl->c);
	cl->bs = srdma_conn_buf_size(cl->c);
	cl->sealed = cl->info->seal != SRDMA_SEAL_OFF;
	cl->max_msg = cl->sealed ? cl->bs - SRDMA_SEAL_OVERHEAD : cl->bs;
}

/* End the connection: BYE, or ERROR with why we end it (our QP failed, the
 * server broke the protocol) so that the server logs the real reason. */
static void end_conn(struct client *cl)
{
	srdma_conn_close(cl->c, cl->close_code, cl->close_code ? cl->close_reason : NULL);
	cl->c = NULL;
}

/*
 * After the connection ended, with --reconnect: a new one (new QP, new
 * PSNs, the TLS session resumed when the server gave a ticket), with
 * backoff, for up to --reconnect's time. Nothing that was in flight is
 * sent again: that command was already reported failed. Not after the
 * server broke the protocol: that is no outage. true: connected again.
 */
static bool recover(struct client *cl)
{
	struct srdma_err err;
	unsigned int attempts = 0;
	int rc;

	if (!cl->closed)
		return true;
	if (!reconnect_ms || !cl->c || cl->close_code == SRDMA_ERROR_BAD_MESSAGE)
		return false;
	/*
	 * One budget (--reconnect's time) for a series of reconnects. A
	 * connection that ends again soon, having served nothing (a server
	 * that accepts and drops at once, or is full), does not start a new
	 * series: the series goes on, and its waits keep growing, so such a
	 * server is neither hammered nor retried forever.
	 */
	if (!cl->series_end || cl->served || now_us() - cl->connected_at >= RECONNECT_CALM_US) {
		cl->series_end = now_us() + reconnect_ms * 1000.0;
		cl->series_wait_ms = 0;
	} else {
		int left;

		cl->series_wait_ms = cl->series_wait_ms ? cl->series_wait_ms * 2 : SRDMA_RETRY_MIN_MS;
		if (cl->series_wait_ms > SRDMA_RETRY_MAX_MS)
			cl->series_wait_ms = SRDMA_RETRY_MAX_MS;
		left = (int)((cl->series_end - now_us()) / 1000);
		poll(NULL, 0, cl->series_wait_ms < left ? cl->series_wait_ms : left > 0 ? left : 0);
	}
	if (now_us() >= cl->series_end) {
		report_error("reconnect", "gave up: connections kept ending at once");
		snprintf(cl->close_reason, sizeof(cl->close_reason),
			 "reconnect gave up: connections kept ending at once");
		cl->close_clean = false;
		return false;
	}
	if (json) {
		printf("{\"event\":\"reconnecting\",\"reason\":");
		json_string(stdout, cl->close_reason, strlen(cl->close_reason));
		printf("}\n");
	} else {
		printf("connection ended (%s): reconnecting\n", cl->close_reason);
	}
	fflush(stdout);
	end_conn(cl);
	rc = srdma_client_reconnect(cl->cl, cl->host, (int)((cl->series_end - now_us()) / 1000) + 1,
				    &cl->c, &attempts, &err);
	if (rc) {
		cl->c = NULL;
		report_error(err.step, err.msg);
		snprintf(cl->close_reason, sizeof(cl->close_reason), "reconnect failed: %s",
			 err.msg);
		cl->close_clean = false;
		return false;
	}
	cl->closed = false;
	cl->close_code = 0;
	cl->connected_at = now_us();
	cl->served = false;
	adopt(cl);
	if (json)
		printf("{\"event\":\"reconnected\",\"attempts\":%u,\"tls_resumed\":%s}\n",
		       attempts, cl->info->tls_resumed ? "true" : "false");
	else
		printf("reconnected after %u attempt%s%s\n", attempts, attempts == 1 ? "" : "s",
		       cl->info->tls_resumed ? " (TLS session resumed)" : "");
	print_connected(cl->info);
	return true;
}

static void do_auto(struct client *cl, unsigned long n)
{
	unsigned long ok_e = 0, ok_w = 0, failures_before = cl->st.failures, run = 0;
	double t0 = now_us();
	char text[64];

	/* With --reconnect, a round that fails with the connection is
	 * reported failed and the next one runs on the new connection. */
	for (unsigned long i = 1; i <= n && recover(cl); i++) {
		run++;
		snprintf(text, sizeof(text), "auto message %lu of %lu", i, n);
		if (do_send(cl, text, true) == 0)
			ok_e++;
		snprintf(text, sizeof(text), "auto write %lu of %lu", i, n);
		if (do_write(cl, text, true) == 0)
			ok_w++;
	}
	/* rounds: those run (fewer than asked when the connection ended
	 * for good). */
	if (json)
		printf("{\"event\":\"auto\",\"rounds\":%lu,\"echoes_ok\":%lu,\"writes_ok\":%lu,"
		       "\"failures\":%lu,\"asked\":%lu,\"elapsed_ms\":%.1f}\n", run, ok_e, ok_w,
		       cl->st.failures - failures_before, n, (now_us() - t0) / 1000);
	else
		printf("auto: %lu rounds%s: %lu/%lu echoes ok, %lu/%lu writes ok, %.1f ms\n", run,
		       run < n ? " (the connection ended)" : "", ok_e, run, ok_w, run,
		       (now_us() - t0) / 1000);
	fflush(stdout);
}

static void do_stats(struct client *cl)
{
	unsigned long ops = cl->st.echoes + cl->st.writes;
	double avg = ops ? cl->st.rtt_sum / ops : 0;

	if (json)
		printf("{\"event\":\"stats\",\"echoes\":%lu,\"writes\":%lu,\"failures\":%lu,"
		       "\"bytes\":%llu,\"rtt_min_us\":%.1f,\"rtt_avg_us\":%.1f,\"rtt_max_us\":%.1f}\n",
		       cl->st.echoes, cl->st.writes, cl->st.failures, cl->st.bytes,
		       cl->st.rtt_min, avg, cl->st.rtt_max);
	else
		printf("stats: %lu echoes, %lu writes, %lu failures, %llu bytes; "
		       "rtt min/avg/max %.1f/%.1f/%.1f us\n", cl->st.echoes, cl->st.writes,
		       cl->st.failures, cl->st.bytes, cl->st.rtt_min, avg, cl->st.rtt_max);
	fflush(stdout);
}

static void print_connected(const struct srdma_conn_info *i)
{
	if (json) {
		printf("{\"event\":\"connected\",\"server\":");
		json_string(stdout, i->peer_addr, strlen(i->peer_addr));
		printf(",\"local_qpn\":%u,\"remote_qpn\":%u", i->local_qpn, i->remote_qpn);
		/* Secrets, as in the text form: only with -v. */
		if (verbose)
			printf(",\"local_psn\":%u,\"remote_psn\":%u,\"rkey\":%u,"
			       "\"window_addr\":%llu", i->local_psn, i->remote_psn,
			       i->remote_rkey, (unsigned long long)i->remote_addr);
		printf(",\"tls\":\"%s\",\"cipher\":\"%s\",\"device\":", i->tls_version,
		       i->tls_cipher);
		json_string(stdout, i->dev_name, strlen(i->dev_name));
		printf(",\"mtu\":%d,\"window_bytes\":%u,\"psn_mode\":\"%s\",\"seal\":\"%s\"}\n",
		       128 << i->path_mtu, i->remote_len,
		       i->psn_mode == SRDMA_PSN_EXPORTER ? "exporter" : "exchange",
		       srdma_seal_name(i->seal));
	} else {
		printf("connected to %s: %s %s, %s QPN 0x%06x <-> 0x%06x, MTU %d, PSNs verified (%s), peer bound%s%s\n",
		       i->peer_addr, i->tls_version, i->tls_cipher, i->dev_name, i->local_qpn,
		       i->remote_qpn, 128 << i->path_mtu,
		       i->psn_mode == SRDMA_PSN_EXPORTER ? "exporter" : "exchange",
		       i->seal ? ", sealed with " : "", i->seal ? srdma_seal_name(i->seal) : "");
		if (verbose)
			printf("PSN local 0x%06x remote 0x%06x; server window rkey 0x%x, "
			       "address 0x%llx, %u bytes\n", i->local_psn, i->remote_psn,
			       i->remote_rkey, (unsigned long long)i->remote_addr, i->remote_len);
	}
	fflush(stdout);
}

static void print_help(void)
{
	printf("commands: send TEXT | write TEXT | auto [N] | rekey | stats | info | help | quit\n");
}

/* Move the connection to a fresh QP (new PSNs, new seal keys) now, and
 * wait until both sides have moved (what the server sends meanwhile would
 * answer nothing: a violation, as at the prompt). */
static void do_rekey(struct client *cl)
{
	uint32_t before = cl->info->local_qpn, epoch = cl->info->epoch;
	double t0 = now_us(), ms;
	struct srdma_err err;
	struct ibv_wc wc;

	if (srdma_conn_rekey(cl->c, &err)) {
		report_error("rekey", err.msg);
		return;
	}
	while (srdma_conn_rekeying(cl->c) && !cl->closed) {
		struct pollfd p[2] = {
			{ .fd = srdma_conn_channel(cl->c)->fd, .events = POLLIN },
			{ .fd = srdma_conn_ctrl_fd(cl->c), .events = POLLIN },
		};
		int n = srdma_conn_poll_wc(cl->c, &wc, 1);

		if (n < 0)
			note_closed(cl, "completion queue error", false, SRDMA_ERROR_QP);
		else if (n == 1 && wc.status != IBV_WC_SUCCESS)
			qp_failed(cl, "rekey", wc.status);
		else if (n == 1 && (wc.opcode & IBV_WC_RECV))
			violation(cl, "rekey", "a message from the server that answers nothing");
		if (n != 0)
			continue;
		/* The rekey's steps come on both fds; its end in either poll. */
		check_ctrl(cl);
		if (!srdma_conn_rekeying(cl->c) || cl->closed)
			break;
		if (poll(p, 2, wait_ms(cl, -1)) < 0 && errno != EINTR)
			note_closed(cl, strerror(errno), false, SRDMA_ERROR_INTERNAL);
	}
	if (cl->closed) {
		report_error("rekey", cl->close_reason);
		return;
	}
	ms = (now_us() - t0) / 1000;
	if (json)
		printf("{\"event\":\"rekeyed\",\"epoch\":%u,\"local_qpn\":%u,\"remote_qpn\":%u,"
		       "\"ms\":%.1f}\n", cl->info->epoch, cl->info->local_qpn, cl->info->remote_qpn, ms);
	else
		printf("rekeyed: QPN 0x%06x -> 0x%06x, server's 0x%06x, new PSNs%s (epoch %u -> %u, "
		       "%.1f ms)\n", before, cl->info->local_qpn, cl->info->remote_qpn,
		       cl->sealed ? " and seal keys" : "", epoch, cl->info->epoch, ms);
	fflush(stdout);
}

/* Run one command line; returns false to quit. */
static bool run_command(struct client *cl, char *line)
{
	char *cmd = line, *arg;
	unsigned long n = 10;

	while (*cmd == ' ' || *cmd == '\t')
		cmd++;
	if (!*cmd || *cmd == '#')
		return true;
	arg = cmd + strcspn(cmd, " \t");
	if (*arg) {
		*arg++ = '\0';
		while (*arg == ' ' || *arg == '\t')
			arg++;
	}
	if (!strcmp(cmd, "send"))
		do_send(cl, arg, false);
	else if (!strcmp(cmd, "write"))
		do_write(cl, arg, false);
	else if (!strcmp(cmd, "auto")) {
		if (*arg && !parse_ulong(prog, "auto", arg, 1, 1000000, &n))
			return true;
		do_auto(cl, n);
	} else if (!strcmp(cmd, "rekey"))
		do_rekey(cl);
	else if (!strcmp(cmd, "stats"))
		do_stats(cl);
	else if (!strcmp(cmd, "info"))
		print_connected(cl->info);
	else if (!strcmp(cmd, "help"))
		print_help();
	else if (!strcmp(cmd, "quit") || !strcmp(cmd, "exit"))
		return false;
	else
		report_error("command", "unknown command (try 'help')");
	return true;
}

/*
 * Command lines from stdin, read with read(2) into our own buffer: stdio's
 * buffer would hide lines already read from poll(), which only sees the fd.
 */
struct line_reader {
	char buf[8192];
	size_t len;
	bool eof, overlong;
};

/* Next complete line into out (NUL-terminated): 1, none buffered: 0, EOF: -1. */
static int next_line(struct line_reader *r, char *out, size_t cap)
{
	char *nl = memchr(r->buf, '\n', r->len);
	size_t n;

	if (!nl && !(r->eof && r->len))
		return r->eof ? -1 : 0;
	n = nl ? (size_t)(nl - r->buf) : r->len;
	memcpy(out, r->buf, n < cap ? n : cap - 1);
	out[n < cap ? n : cap - 1] = '\0';
	if (nl)
		n++;
	memmove(r->buf, r->buf + n, r->len - n);
	r->len -= n;
	return 1;
}

/* Read what stdin has; a line longer than the buffer is dropped whole. */
static void fill_lines(struct line_reader *r)
{
	ssize_t n = read(STDIN_FILENO, r->buf + r->len, sizeof(r->buf) - r->len);

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		r->eof = true;
		return;
	}
	r->len += (size_t)n;
	if (r->len == sizeof(r->buf) && !memchr(r->buf, '\n', r->len)) {
		r->len = 0;
		r->overlong = true;
	} else if (r->overlong) {
		char *nl = memchr(r->buf, '\n', r->len);

		if (nl) {	/* the rest of the overlong line ends here */
			size_t k = (size_t)(nl - r->buf) + 1;

			memmove(r->buf, r->buf + k, r->len - k);
			r->len -= k;
			r->overlong = false;
			report_error("command", "line too long");
		} else {
			r->len = 0;
		}
	}
}

/*
 * Between commands nothing may arrive on the QP: a reply nobody asked for
 * is the server breaking the protocol, an error completion our QP failing.
 * Also arms the CQs, so the channel wakes the session for what comes next.
 */
static void check_idle_cq(struct client *cl)
{
	struct ibv_wc wc;
	int n;

	while (!cl->closed && (n = srdma_conn_poll_wc(cl->c, &wc, 1)) != 0) {
		if (n < 0)
			note_closed(cl, "completion queue error", false, SRDMA_ERROR_QP);
		else if (wc.status != IBV_WC_SUCCESS)
			qp_failed(cl, "session", wc.status);
		else if (wc.opcode & IBV_WC_RECV)
			violation(cl, "session", "a message from the server that answers nothing");
	}
}

static void session(struct client *cl)
{
	static struct line_reader in;
	char line[sizeof(in.buf)];
	bool prompted = false;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = STDIN_FILENO, .events = POLLIN },
			{ .fd = srdma_conn_ctrl_fd(cl->c), .events = POLLIN },
			{ .fd = srdma_conn_channel(cl->c)->fd, .events = POLLIN },
		};
		int got;

		check_ctrl(cl);
		check_idle_cq(cl);
		if (cl->closed && !recover(cl))
			return;
		got = next_line(&in, line, sizeof(line));
		if (got < 0)
			return;	/* EOF: quit */
		if (got > 0) {
			prompted = false;
			if (!run_command(cl, line))
				return;
			continue;
		}
		if (interactive && !prompted) {
			fputs("srdma> ", stdout);
			fflush(stdout);
			prompted = true;
		}
		if (poll(p, 3, wait_ms(cl, -1)) < 0) {
			if (errno == EINTR)
				continue;
			note_closed(cl, strerror(errno), false, SRDMA_ERROR_INTERNAL);
			return;
		}
		if (p[0].revents)
			fill_lines(&in);
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "ca", required_argument, NULL, 'a' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "server-name", required_argument, NULL, 'S' },
		{ "dev", required_argument, NULL, 'd' },
		{ "ib-port", required_argument, NULL, 'i' },
		{ "gid-index", required_argument, NULL, 'g' },
		{ "buf-size", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "op-timeout", required_argument, NULL, 'o' },
		{ "peer-timeout", required_argument, NULL, 'T' },
		{ "crl", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "psn-mode", required_argument, NULL, 'P' },
		{ "seal", optional_argument, NULL, 'E' },
		{ "reconnect", optional_argument, NULL, OPT_RECONNECT },
		{ "rekey-interval", required_argument, NULL, OPT_REKEY },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct srdma_client_opts o;
	struct tool_opts t;
	struct client cl = { 0 };
	struct srdma_err err;
	const char *server_name = NULL;
	unsigned long v;
	int ch;

	srdma_client_opts_init(&o);
	tool_opts_init(&t, prog);
	while ((ch = getopt_long(argc, argv, "p:a:c:k:S:d:i:g:s:t:o:T:r:P:E::jvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'S': server_name = optarg; break;
		case 'o':
			if (!parse_ulong(prog, "--op-timeout", optarg, 1, 3600000, &v))
				return 2;
			op_timeout_ms = (int)v;
			break;
		case OPT_REKEY:
			if (!parse_ulong(prog, "--rekey-interval", optarg, 1, 86400, &v))
				return 2;
			o.rekey_interval_ms = (int)v * 1000;
			break;
		case OPT_RECONNECT:
			reconnect_ms = 60000;
			if (optarg) {
				if (!parse_ulong(prog, "--reconnect", optarg, 1, 86400, &v))
					return 2;
				reconnect_ms = (int)v * 1000;
			}
			break;
		case 'V': printf("srdma-client %s\n", srdma_version()); return 0;
		case 'h': usage(stdout); return 0;
		default:
			if (!tool_opt_or_usage(&t, ch, optarg))
				return 2;
		}
	}
	tool_client_opts(&t, &o);
	o.rekey = 1;	/* every post fetches srdma_conn_qp(): a rekey may move it */
	o.server_name = server_name;
	json = t.json;
	verbose = t.verbose;
	if (optind != argc - 1) {
		fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog,
			optind >= argc ? "no HOST given" : "more than one HOST given", prog);
		return 2;
	}
	if (!o.ca_file) {
		fprintf(stderr, "%s: --ca is required: the server's certificate is always verified\n"
			"Try '%s --help'.\n", prog, prog);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	interactive = isatty(STDIN_FILENO) && !json;

	/* Tickets kept: a reconnect resumes the TLS session. */
	o.resume = reconnect_ms > 0;
	cl.host = argv[optind];
	if (srdma_client_new(&o, &cl.cl, &err) ||
	    srdma_client_connect(cl.cl, cl.host, &cl.c, &err)) {
		if (err.peer_code && !json)
			fprintf(stderr, "%s: the server refused the connection: %s\n", prog, err.msg);
		else
			report_error(err.step, err.msg);
		srdma_client_free(cl.cl);
		return 1;
	}
	adopt(&cl);
	cl.connected_at = now_us();
	print_connected(cl.info);
	if (interactive)
		print_help();

	session(&cl);
	if (!cl.closed)
		note_closed(&cl, "quit", true, 0);
	if (json) {
		printf("{\"event\":\"closed\",\"reason\":");
		json_string(stdout, cl.close_reason, strlen(cl.close_reason));
		printf("}\n");
	} else {
		printf("closed: %s\n", cl.close_reason);
	}
	fflush(stdout);
	end_conn(&cl);
	srdma_client_free(cl.cl);
	return cl.close_clean ? 0 : 1;
}
