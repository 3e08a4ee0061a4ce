/*
 * rogue-server: a server built from libsrdma's parts that misbehaves on
 * purpose, for tests of srdma-client (tests/rdma/rogue-server.sh). It does
 * the real TLS handshake and, unless its mode says otherwise, the real
 * setup (HELLO, PARAMS, QP to RTS, peer binding), then serves one client
 * the way srdma-server does (echo, WRITE_ACK), except where its mode breaks
 * the protocol. One connection, then it exits.
 *
 * It prints what the client tells it on the control channel, one line
 * each: "rogue: client said BYE", "rogue: client said ERROR <code>: <text>",
 * "rogue: connection lost", and "rogue: listening" once it listens.
 *
 * Usage: rogue-server --mode MODE --cert F --key F --port N [--dev NAME]
 *                     [--life SECONDS]
 * Modes: see the table below; "good" breaks nothing (the control).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "keyupdate.h"
#include "srdma_internal.h"

#define APP_IMM_ECHO 1u
#define APP_IMM_WRITE_ACK 2u
#define APP_ACK_LEN 36

enum mode {
	GOOD,
	/* replies */
	ECHO_LONG, ECHO_SHORT, ACK_LONG, ACK_SHORT, WRONG_IMM, NO_IMM,
	EARLY_REPLY, DOUBLE_REPLY,
	/* setup */
	ERROR_LONG, MTU_0, MTU_7, QPN_1, WINDOW_NONE, WINDOW_HUGE, RKEY_0, GID_V6,
	/* phases */
	BYE_TLS, BYE_HELLO, BYE_BINDING, BYE_SESSION, ERROR_SESSION, SILENT,
	CLOSE_SETUP, CLOSE_BINDING,
	/* the control channel */
	KEYUPDATE_FLOOD, NO_PONG,
};

static const char *const mode_names[] = {
	[GOOD] = "good",
	[ECHO_LONG] = "echo-long",		/* an echo of buf_size bytes */
	[ECHO_SHORT] = "echo-short",		/* an echo of 1 byte */
	[ACK_LONG] = "ack-long",		/* a WRITE_ACK of buf_size bytes */
	[ACK_SHORT] = "ack-short",		/* a WRITE_ACK of 4 bytes */
	[WRONG_IMM] = "wrong-imm",		/* replies with immediate 99 */
	[NO_IMM] = "no-imm",			/* replies without an immediate */
	[EARLY_REPLY] = "early-reply",		/* an echo before any request */
	[DOUBLE_REPLY] = "double-reply",	/* two echoes for one send */
	[ERROR_LONG] = "error-long",		/* ERROR with the longest, oddest text */
	[MTU_0] = "mtu-0",			/* PARAMS fields out of range */
	[MTU_7] = "mtu-7",
	[QPN_1] = "qpn-1",
	[WINDOW_NONE] = "window-none",		/* offers a window, sends none */
	[WINDOW_HUGE] = "window-huge",		/* a 2 GiB window */
	[RKEY_0] = "rkey-0",			/* a window with rkey 0 */
	[GID_V6] = "gid-v6",			/* a GID of the other family */
	[BYE_TLS] = "bye-tls",			/* BYE instead of HELLO */
	[BYE_HELLO] = "bye-hello",		/* HELLO, then BYE instead of PARAMS */
	[BYE_BINDING] = "bye-binding",		/* BYE instead of its binding */
	[BYE_SESSION] = "bye-session",		/* BYE instead of the first reply */
	[ERROR_SESSION] = "error-session",	/* ERROR instead of the first reply */
	[SILENT] = "silent",			/* nothing after TLS */
	[CLOSE_SETUP] = "close-setup",		/* closes after the client's PARAMS */
	[CLOSE_BINDING] = "close-binding",	/* closes instead of its binding */
	[KEYUPDATE_FLOOD] = "keyupdate-flood",	/* KeyUpdate(requested), never reads */
	[NO_PONG] = "no-pong",			/* never answers a PING */
};
#define N_MODES (sizeof(mode_names) / sizeof(mode_names[0]))

/* Printable ASCII at its oddest: quotes, backslashes, format and JSON
 * characters, what looks like an escape sequence without the ESC. */
#define ODD_TEXT "\"%s%n%x\\\\' {\"event\":\"closed\"} [2J[31m <script> \\x1b $(id) `id` ;|&<>~"

static enum mode mode;
static int64_t life_end;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("rogue: ", stdout);
	vprintf(fmt, ap);
	putchar('\n');
	fflush(stdout);
	va_end(ap);
}

static void die(const char *what, const struct srdma_err *err)
{
	say("%s failed: %s: %s", what, err ? err->step : "", err ? err->msg : "");
	exit(1);
}

/* Each step waits as long as the rogue lives: a client under valgrind
 * and emulation is slow, and the client's deadlines are what is tested. */
static int64_t deadline(void)
{
	return life_end;
}

/* Stay connected doing nothing until the client goes or life ends. */
static void idle(struct srdma_conn *c)
{
	char b[256];

	while (srdma_now_ms() < life_end) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };

		if (poll(&p, 1, 200) > 0 && read(c->fd, b, sizeof(b)) <= 0) {
			say("connection lost");
			return;
		}
	}
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* PARAMS by hand: the library's encoder refuses what we want to send. */
static void send_params_raw(struct srdma_conn *c, const struct srdma_params *pm)
{
	uint8_t b[SRDMA_WIRE_HDR_LEN + 43] = { 0, SRDMA_MSG_PARAMS, 0, 0, 0, 43 };
	uint8_t *p = b + SRDMA_WIRE_HDR_LEN;
	struct srdma_err err;

	put_u32(p, pm->qpn);
	put_u32(p + 4, pm->psn);
	p[8] = (uint8_t)(pm->lid >> 8);
	p[9] = (uint8_t)pm->lid;
	memcpy(p + 10, pm->gid, 16);
	p[26] = pm->mtu;
	put_u32(p + 27, (uint32_t)(pm->addr >> 32));
	put_u32(p + 31, (uint32_t)pm->addr);
	put_u32(p + 35, pm->rkey);
	put_u32(p + 39, pm->len);
	if (srdma_tls_write(c->ssl, b, sizeof(b), deadline(), &err))
		die("send PARAMS", &err);
}

static void send_msg(struct srdma_conn *c, uint16_t type)
{
	struct srdma_msg m = { .type = type };
	struct srdma_err err;

	if (type == SRDMA_MSG_HELLO) {
		m.u.hello.version = SRDMA_WIRE_VERSION;
		m.u.hello.caps = SRDMA_CAP_PING |
				 (mode == WINDOW_NONE || c->window.len ? SRDMA_CAP_WRITE_WINDOW : 0);
	}
	if (srdma_ctrl_send(c, &m, deadline(), &err))
		die("send control message", &err);
}

static void send_error(struct srdma_conn *c, uint16_t code, const char *text)
{
	srdma_ctrl_send_error(c, code, text, deadline());
}

/* The end of a phase mode: say it, then wait for the client to go. */
static void end_with(struct srdma_conn *c, uint16_t type)
{
	if (type == SRDMA_MSG_BYE)
		send_msg(c, SRDMA_MSG_BYE);
	idle(c);
	srdma_conn_free(c);
	exit(0);
}

/* The setup as srdma's server does it, broken where the mode says. */
static void setup(struct srdma_conn *c)
{
	struct srdma_msg m;
	struct srdma_err err;
	struct srdma_params told;

	if (mode == SILENT)
		end_with(c, 0);
	if (mode == BYE_TLS)
		end_with(c, SRDMA_MSG_BYE);
	if (srdma_ctrl_recv(c, &m, deadline(), &err) || m.type != SRDMA_MSG_HELLO)
		die("read HELLO", &err);
	if (srdma_ctrl_recv(c, &m, deadline(), &err) || m.type != SRDMA_MSG_PARAMS)
		die("read PARAMS", &err);
	c->remote = m.u.params;
	if (mode == CLOSE_SETUP) {
		srdma_conn_free(c);
		exit(0);
	}
	if (mode == ERROR_LONG) {
		char text[SRDMA_WIRE_MAX_TEXT + 1];

		memset(text, '~', SRDMA_WIRE_MAX_TEXT);
		memcpy(text, ODD_TEXT, strlen(ODD_TEXT));
		text[SRDMA_WIRE_MAX_TEXT] = '\0';
		send_error(c, 0xffff, text);
		end_with(c, 0);
	}
	if (srdma_verbs_create(c, mode != WINDOW_NONE, &err) ||
	    srdma_verbs_local_params(c, &err))
		die("create QP", &err);
	send_msg(c, SRDMA_MSG_HELLO);
	if (mode == BYE_HELLO)
		end_with(c, SRDMA_MSG_BYE);
	if (srdma_verbs_connect(c, &err))
		die("connect QP", &err);
	told = c->local;
	switch (mode) {
	case MTU_0: told.mtu = 0; break;
	case MTU_7: told.mtu = 7; break;
	case QPN_1: told.qpn = 1; break;
	case WINDOW_HUGE: told.len = 1u << 31; break;
	case RKEY_0: told.rkey = 0; break;
	case GID_V6:	/* 2001:db8::1, where ours is IPv4-mapped */
		memset(told.gid, 0, sizeof(told.gid));
		told.gid[0] = 0x20, told.gid[1] = 0x01, told.gid[2] = 0x0d, told.gid[3] = 0xb8;
		told.gid[15] = 1;
		break;
	default: break;
	}
	send_params_raw(c, &told);
	if (mode == BYE_BINDING)
		end_with(c, SRDMA_MSG_BYE);
	if (mode == CLOSE_BINDING) {
		srdma_conn_free(c);
		exit(0);
	}
	if (srdma_binding_exchange(c, deadline(), &err))
		die("peer binding", &err);
	say("connected");
}

static void post_reply(struct srdma_conn *c, uint32_t len, int imm)
{
	struct ibv_sge sge = { .addr = (uintptr_t)c->send_buf.addr, .length = len,
			       .lkey = c->send_buf.lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1,
				  .opcode = imm < 0 ? IBV_WR_SEND : IBV_WR_SEND_WITH_IMM,
				  .send_flags = IBV_SEND_SIGNALED,
				  .imm_data = htonl((uint32_t)(imm < 0 ? 0 : imm)) }, *bad;

	if (ibv_post_send(c->qp, &wr, &bad))
		say("post send failed");
}

/* A request came in receive slot wc->wr_id: answer it as the mode says. */
static void on_request(struct srdma_conn *c, const struct ibv_wc *wc)
{
	size_t bs = c->shape.buf_size;
	uint8_t *out = c->send_buf.addr;
	const uint8_t *in = (const uint8_t *)c->recv_buf.addr + wc->wr_id * bs;
	bool write = wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM;
	uint32_t len = write ? APP_ACK_LEN : wc->byte_len;
	int imm = write ? APP_IMM_WRITE_ACK : APP_IMM_ECHO;

	if (write) {
		uint32_t n = ntohl(wc->imm_data), be = htonl(n);
		unsigned int dl = 0;

		if (n > c->window.len)
			n = (uint32_t)c->window.len;
		memcpy(out, &be, 4);
		EVP_Digest(c->window.addr, n, out + 4, &dl, EVP_sha256(), NULL);
	} else {
		memcpy(out, in, wc->byte_len);
	}
	switch (mode) {
	case ECHO_LONG: if (!write) { memset(out + len, 'A', bs - len); len = (uint32_t)bs; } break;
	case ECHO_SHORT: if (!write) len = 1; break;
	case ACK_LONG: if (write) { memset(out + len, 'A', bs - len); len = (uint32_t)bs; } break;
	case ACK_SHORT: if (write) len = 4; break;
	case WRONG_IMM: imm = 99; break;
	case NO_IMM: imm = -1; break;
	case BYE_SESSION: end_with(c, SRDMA_MSG_BYE); break;
	case ERROR_SESSION:
		send_error(c, SRDMA_ERROR_INTERNAL, ODD_TEXT);
		end_with(c, 0);
		break;
	default: break;
	}
	post_reply(c, len, imm);
	if (mode == DOUBLE_REPLY)
		post_reply(c, len, imm);
	srdma_conn_post_recv(c, (unsigned int)wc->wr_id);
}

/* What the client says on the control channel. Returns false when it is
 * gone. PINGs are answered, except in no-pong mode. */
static bool on_ctrl(struct srdma_conn *c)
{
	struct srdma_msg m;
	struct srdma_err err;

	if (srdma_ctrl_recv(c, &m, srdma_now_ms() + 2000, &err)) {
		say("connection lost");
		return false;
	}
	switch (m.type) {
	case SRDMA_MSG_BYE:
		say("client said BYE");
		return false;
	case SRDMA_MSG_ERROR:
		say("client said ERROR %u: %s", m.u.error.code, m.u.error.text);
		return false;
	case SRDMA_MSG_PING:
		say("client sent PING");
		if (mode != NO_PONG)
			send_msg(c, SRDMA_MSG_PONG);
		return true;
	default:
		say("client sent %s", srdma_msg_type_name(m.type));
		return true;
	}
}

static void serve(struct srdma_conn *c)
{
	if (mode == EARLY_REPLY) {
		memcpy(c->send_buf.addr, "unsolicited", 11);
		post_reply(c, 11, APP_IMM_ECHO);
	}
	if (mode == KEYUPDATE_FLOOD) {
		unsigned long sent;
		const char *how = keyupdate_flood(c->ssl, c->fd, life_end, &sent);

		say("sent %lu KeyUpdates; %s", sent, how);
		return;
	}
	while (srdma_now_ms() < life_end) {
		struct pollfd p[2] = {
			{ .fd = c->channel->fd, .events = POLLIN },
			{ .fd = c->fd, .events = POLLIN },
		};
		struct ibv_wc wc;
		int n;

		/* poll_wc, not next_wc: next_wc would serve the control
		 * channel too, and this server reads it raw (on_ctrl). */
		while ((n = srdma_conn_poll_wc(c, &wc, 1)) == 1) {
			if (wc.status != IBV_WC_SUCCESS)
				say("completion: %s", ibv_wc_status_str(wc.status));
			else if (wc.opcode & IBV_WC_RECV)
				on_request(c, &wc);
		}
		if (poll(p, 2, 200) > 0 && p[1].revents && !on_ctrl(c))
			return;
	}
	say("end of life");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "port", required_argument, NULL, 'p' },
		{ "dev", required_argument, NULL, 'd' },
		{ "life", required_argument, NULL, 'l' },
		{ 0 }
	};
	struct srdma_server_opts o;
	struct srdma_listener *l;
	struct srdma_conn *c;
	struct srdma_err err;
	const char *name = NULL;
	int ch, fd, life_s = 60;
	size_t i;

	srdma_server_opts_init(&o);
	while ((ch = getopt_long(argc, argv, "m:c:k:p:d:l:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'm': name = optarg; break;
		case 'c': o.cert_file = optarg; break;
		case 'k': o.key_file = optarg; break;
		case 'p': o.port = (uint16_t)atoi(optarg); break;
		case 'd': o.rdma.dev_name = optarg; break;
		case 'l': life_s = atoi(optarg); break;
		default: return 2;
		}
	}
	for (i = 0; name && i < N_MODES; i++)
		if (mode_names[i] && !strcmp(name, mode_names[i]))
			break;
	if (!name || i == N_MODES) {
		fprintf(stderr, "usage: rogue-server --mode MODE --cert F --key F --port N "
			"[--dev NAME] [--life S]\nmodes:");
		for (i = 0; i < N_MODES; i++)
			fprintf(stderr, " %s", mode_names[i]);
		fputc('\n', stderr);
		return 2;
	}
	mode = (enum mode)i;
	life_end = srdma_now_ms() + life_s * 1000;
	if (srdma_listen(&o, &l, &err))
		die("listen", &err);
	say("listening");
	for (;;) {
		struct pollfd p = { .fd = srdma_listener_fd(l), .events = POLLIN };
		int rc = srdma_accept_fd(l, &fd, NULL, 0, &err);

		if (rc == 0)
			break;
		if (rc != -EAGAIN)
			die("accept", &err);
		if (srdma_now_ms() >= life_end)
			die("accept", NULL);
		poll(&p, 1, 200);
	}
	if (srdma_server_start_tls(l, fd, deadline(), &c, &err))
		die("tls handshake", &err);
	setup(c);
	serve(c);
	srdma_conn_free(c);
	srdma_listener_free(l);
	return 0;
}
