/* Helpers shared by the srdma programs. */
#ifndef SRDMA_TOOLS_COMMON_H
#define SRDMA_TOOLS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Parse a whole decimal number in [min, max]; on failure print
 * "PROG: OPTION: ..." to stderr and return false. */
bool parse_ulong(const char *prog, const char *option, const char *s,
		 unsigned long min, unsigned long max, unsigned long *out);
/* --peer-timeout MS: 0 (never: -1 in *out) or 300..86400000; on failure
 * print "PROG: --peer-timeout: ..." and return false. */
bool parse_peer_timeout(const char *prog, const char *s, int *out);
/*
 * The options srdma-server, srdma-client and srdma-bench share. A short
 * option means one thing in all three (each takes the ones that apply):
 *   -p port          -d dev           -i ib-port       -g gid-index
 *   -s buf-size      -c cert          -k key           -a ca
 *   -C client-ca     -r crl           -t setup deadline (ms)
 *   -T peer-timeout  -P psn-mode      -j json          -v verbose
 *   -E seal[=CIPHER]
 * Each program lists its own long options (getopt) and hands these letters
 * to tool_opt().
 */
#include <srdma.h>

struct tool_opts {
	const char *prog;
	uint16_t port;			/* 0: not given */
	const char *cert, *key, *ca, *client_ca, *crl;
	int handshake_ms;		/* 0: the library's default */
	int peer_timeout_ms;		/* 0: default, -1: never */
	struct srdma_rdma_opts rdma;	/* gid_index -1: automatic */
	int seal;			/* enum srdma_seal_cipher */
	bool json, verbose;
};
void tool_opts_init(struct tool_opts *t, const char *prog);
/* Store option ch (with its argument): 1 when it is one of the shared
 * letters above, 0 when it is not, -1 when its value is bad (the message
 * printed: exit 2). */
int tool_opt(struct tool_opts *t, int ch, const char *arg);
/* tool_opt() for getopt's default case: false (exit 2) when ch is bad or
 * no option of ours ("Try 'PROG --help'." printed for the latter). */
bool tool_opt_or_usage(struct tool_opts *t, int ch, const char *arg);
/* The shared options into a listener's or a client's options. */
void tool_server_opts(const struct tool_opts *t, struct srdma_server_opts *o);
void tool_client_opts(const struct tool_opts *t, struct srdma_client_opts *o);

/* Write s as a JSON string (quotes included). */
void json_string(FILE *f, const char *s, size_t len);
/* Bytes a peer sent, made safe for a log line or a terminal: printable
 * ASCII stays, a backslash doubles, everything else (escape sequences,
 * newlines, NULs) becomes \xHH. At most cap - 1 characters and a NUL go to
 * out; the output is cut at a whole escape. Returns out. */
char *escape_text(char *out, size_t cap, const void *in, size_t len);
/* Monotonic time in microseconds. */
double now_us(void);
/* Raise the soft RLIMIT_NOFILE towards want (at most the hard limit);
 * returns the soft limit now in effect (0 if it cannot be read). */
unsigned long raise_nofile(unsigned long want);
/* SHA-256 of buf, in out[32]. Returns 0 or -1. */
int sha256(const void *buf, size_t len, unsigned char out[32]);

#endif

/*
 * The programs' own protocol over the connected QP (docs/PROTOCOL.md,
 * "RDMA messages"): the client SENDs text, the server echoes it back with
 * SEND_WITH_IMM(ECHO); the client RDMA-WRITEs into the server's window with
 * WRITE_WITH_IMM(imm = length), the server reads the window and answers
 * SEND_WITH_IMM(WRITE_ACK) carrying u32 length + SHA-256 of what it read.
 */
#define APP_IMM_ECHO 1u
#define APP_IMM_WRITE_ACK 2u
#define APP_ACK_LEN (4 + 32)
/*
 * Sealed (--seal): every message is srdma_conn_seal()ed, and the kind
 * inside it (authenticated, unlike the immediate) says what it is: the
 * client's SEND and the server's echo are kind ECHO, the client's write
 * and the server's acknowledgement kind WRITE_ACK. A write's immediate is
 * the sealed length; the acknowledgement covers the opened bytes.
 */
#define APP_KIND_ECHO APP_IMM_ECHO
#define APP_KIND_WRITE APP_IMM_WRITE_ACK
/* The help text of --seal, the same in every program. */
#define SEAL_HELP \
"  -E, --seal[=CIPHER]    seal every RDMA message (SEND and WRITE payloads\n" \
"                         encrypted and authenticated; a forged, replayed or\n" \
"                         altered one ends the connection): aes-256-gcm\n" \
"                         (default) or chacha20-poly1305; both sides must\n" \
"                         use the same. Each message grows by 32 bytes\n"
