#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <openssl/evp.h>

#include "common.h"

bool parse_ulong(const char *prog, const char *option, const char *s,
		 unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!s || *s < '0' || *s > '9')
		goto bad;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		goto bad;
	*out = v;
	return true;
bad:
	fprintf(stderr, "%s: %s: '%s' is not a number in %lu..%lu\n", prog, option,
		s ? s : "", min, max);
	return false;
}

bool parse_peer_timeout(const char *prog, const char *s, int *out)
{
	unsigned long v;

	if (!parse_ulong(prog, "--peer-timeout", s, 0, 86400000, &v))
		return false;
	if (v && v < 300) {
		fprintf(stderr, "%s: --peer-timeout: %lu ms is too short to probe a peer "
			"(0, or 300 and up)\n", prog, v);
		return false;
	}
	*out = v ? (int)v : -1;	/* 0 on the command line: never */
	return true;
}

void json_string(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch == '\t')
			fputs("\\t", f);
		else if (ch < 0x20 || ch >= 0x7f)
			/* Bytes, not code points: keep the output ASCII. */
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

char *escape_text(char *out, size_t cap, const void *in, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = in;
	size_t o = 0;

	if (cap == 0)
		return out;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = p[i];
		char e[4];
		size_t n;

		if (ch == '\\') {
			e[0] = e[1] = '\\';
			n = 2;
		} else if (ch >= 0x20 && ch < 0x7f) {
			e[0] = (char)ch;
			n = 1;
		} else {
			e[0] = '\\';
			e[1] = 'x';
			e[2] = hex[ch >> 4];
			e[3] = hex[ch & 15];
			n = 4;
		}
		if (o + n >= cap)
			break;
		memcpy(out + o, e, n);
		o += n;
	}
	out[o] = '\0';
	return out;
}

int sha256(const void *buf, size_t len, unsigned char out[32])
{
	unsigned int n = 0;

	if (EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return -1;
	return 0;
}

double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

unsigned long raise_nofile(unsigned long want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 0;
	if (rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (getrlimit(RLIMIT_NOFILE, &rl))
			return 0;
	}
	return rl.rlim_cur == RLIM_INFINITY ? ~0ul : (unsigned long)rl.rlim_cur;
}

void tool_opts_init(struct tool_opts *t, const char *prog)
{
	memset(t, 0, sizeof(*t));
	t->prog = prog;
	t->rdma.gid_index = -1;
}

int tool_opt(struct tool_opts *t, int ch, const char *arg)
{
	unsigned long v;

	switch (ch) {
	case 'p':
		if (!parse_ulong(t->prog, "--port", arg, 1, 65535, &v))
			return -1;
		t->port = (uint16_t)v;
		return 1;
	case 'd': t->rdma.dev_name = arg; return 1;
	case 'i':
		if (!parse_ulong(t->prog, "--ib-port", arg, 1, 255, &v))
			return -1;
		t->rdma.ib_port = (int)v;
		return 1;
	case 'g':
		/* An address vector holds GID indexes 0..255. */
		if (!parse_ulong(t->prog, "--gid-index", arg, 0, 255, &v))
			return -1;
		t->rdma.gid_index = (int)v;
		return 1;
	case 's':
		if (!parse_ulong(t->prog, "--buf-size", arg, 64, SRDMA_MAX_BUF_SIZE, &v))
			return -1;
		t->rdma.buf_size = v;
		return 1;
	case 'c': t->cert = arg; return 1;
	case 'k': t->key = arg; return 1;
	case 'a': t->ca = arg; return 1;
	case 'C': t->client_ca = arg; return 1;
	case 'r': t->crl = arg; return 1;
	case 't':
		if (!parse_ulong(t->prog, "--timeout", arg, 100, 600000, &v))
			return -1;
		t->handshake_ms = (int)v;
		return 1;
	case 'T':
		return parse_peer_timeout(t->prog, arg, &t->peer_timeout_ms) ? 1 : -1;
	case 'P':
		if (!strcmp(arg, "exchange")) {
			t->rdma.psn_mode = SRDMA_PSN_EXCHANGE;
		} else if (!strcmp(arg, "exporter")) {
			t->rdma.psn_mode = SRDMA_PSN_EXPORTER;
		} else {
			fprintf(stderr, "%s: --psn-mode: '%s' is not exchange or exporter\n",
				t->prog, arg);
			return -1;
		}
		return 1;
	case 'E':
		if (!arg || !strcmp(arg, "aes-256-gcm") || !strcmp(arg, "aes")) {
			t->seal = SRDMA_SEAL_AES_256_GCM;
		} else if (!strcmp(arg, "chacha20-poly1305") || !strcmp(arg, "chacha20")) {
			t->seal = SRDMA_SEAL_CHACHA20_POLY1305;
		} else if (!strcmp(arg, "off")) {
			t->seal = SRDMA_SEAL_OFF;
		} else {
			fprintf(stderr, "%s: --seal: '%s' is not aes-256-gcm, chacha20-poly1305 "
				"or off\n", t->prog, arg);
			return -1;
		}
		return 1;
	case 'j': t->json = true; return 1;
	case 'v': t->verbose = true; return 1;
	default:
		return 0;
	}
}

bool tool_opt_or_usage(struct tool_opts *t, int ch, const char *arg)
{
	int rc = tool_opt(t, ch, arg);

	if (rc == 0)
		fprintf(stderr, "Try '%s --help'.\n", t->prog);
	return rc == 1;
}

void tool_server_opts(const struct tool_opts *t, struct srdma_server_opts *o)
{
	if (t->port)
		o->port = t->port;
	o->cert_file = t->cert;
	o->key_file = t->key;
	o->client_ca = t->client_ca;
	o->crl_file = t->crl;
	o->handshake_ms = t->handshake_ms;
	o->peer_timeout_ms = t->peer_timeout_ms;
	o->rdma = t->rdma;
	o->seal = t->seal;
}

void tool_client_opts(const struct tool_opts *t, struct srdma_client_opts *o)
{
	o->port = t->port;
	o->ca_file = t->ca;
	o->cert_file = t->cert;
	o->key_file = t->key;
	o->crl_file = t->crl;
	o->handshake_ms = t->handshake_ms;
	o->peer_timeout_ms = t->peer_timeout_ms;
	o->rdma = t->rdma;
	o->seal = t->seal;
}
