/*
 * Sealed messages: the data path protected in software.
 *
 * With sealing on (both HELLOs name the same cipher), every message a
 * program sends over the QP, SEND or RDMA WRITE, is
 *
 *	header (16 bytes, authenticated, not secret)
 *	  u8 version (1), u8 flags (0), u16 kind (the program's),
 *	  u32 epoch, u64 sequence number (all big-endian)
 *	ciphertext (as long as the message)
 *	tag (16 bytes)
 *
 * under an AEAD (AES-256-GCM or ChaCha20-Poly1305, OpenSSL's EVP) with the
 * header as additional data. Each direction has its own 32-byte key from
 * the TLS exporter (labels "EXPORTER-srdma-seal-c2s" and "-s2c", context
 * the epoch as u32 big-endian), and its own sequence number, from 0, one
 * per message. The 12-byte nonce is u32 (direction << 31 | epoch), then the
 * u64 sequence number: the client's direction is 0, the server's 1. A
 * (key, nonce) pair is never used twice: the number only grows, and a
 * direction stops at SRDMA_SEAL_MAX_MSGS.
 *
 * The receiver takes a message only if its header names the epoch and the
 * very next sequence number and its tag verifies. The first message that
 * fails ends the direction for good: a forged, replayed, reordered, lost
 * or altered message cannot be told from an attack, so nothing after it is
 * trusted either (conn.c then fails the QP and reports why).
 *
 * This file is pure (no verbs, no sockets) so that the unit tests can
 * reach every path; conn.c binds it to a connection.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "srdma_internal.h"

#define SEAL_VERSION 1
#define SEAL_NONCE_LEN 12
#define SEAL_LABEL_C2S "EXPORTER-srdma-seal-c2s"
#define SEAL_LABEL_S2C "EXPORTER-srdma-seal-s2c"

struct seal_dir {
	EVP_CIPHER_CTX *ctx;
	uint64_t seq;		/* the next message's */
	uint32_t dir;		/* 0: client to server, 1: server to client */
	uint32_t epoch;		/* its key's (a rekey moves each direction on
				 * its own, at its switch point) */
};

struct srdma_seal {
	enum srdma_seal_cipher cipher;
	/* tx is the sealing thread's and, at a rekey's switch, the thread
	 * that polls the control channel's: the lock keeps a seal from ever
	 * seeing half a new key (its nonce would then repeat under one). */
	pthread_mutex_t tx_lock;
	bool tx_dead;		/* a rekey failed to set its key: no more seals */
	struct seal_dir tx, rx;
	/* After a rekey moved rx on: the previous epoch's, for the messages
	 * the peer sealed before its switch that the program has not opened
	 * yet (they all come before the new epoch's: the first new one
	 * opened ends it). */
	struct seal_dir rx_prev;
	bool prev_open;
	/* Set once, by the first message that fails to open (release);
	 * why says what it was. Then every open fails. */
	int broken;
	char why[160];
};

const char *srdma_seal_name(int cipher)
{
	switch (cipher) {
	case SRDMA_SEAL_OFF:
		return "off";
	case SRDMA_SEAL_AES_256_GCM:
		return "aes-256-gcm";
	case SRDMA_SEAL_CHACHA20_POLY1305:
		return "chacha20-poly1305";
	default:
		return "unknown";
	}
}

static const EVP_CIPHER *seal_evp(enum srdma_seal_cipher cipher)
{
	switch (cipher) {
	case SRDMA_SEAL_AES_256_GCM:
		return EVP_aes_256_gcm();
	case SRDMA_SEAL_CHACHA20_POLY1305:
		return EVP_chacha20_poly1305();
	default:
		return NULL;
	}
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* The key is set once; each message sets only its nonce. */
static int dir_init(struct seal_dir *d, const EVP_CIPHER *evp, bool encrypt, uint32_t dir,
		    uint32_t epoch, const uint8_t key[SRDMA_SEAL_KEY_LEN])
{
	d->ctx = EVP_CIPHER_CTX_new();
	d->seq = 0;
	d->dir = dir;
	d->epoch = epoch;
	if (!d->ctx || EVP_CipherInit_ex(d->ctx, evp, NULL, NULL, NULL, encrypt) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_IVLEN, SEAL_NONCE_LEN, NULL) != 1 ||
	    EVP_CipherInit_ex(d->ctx, NULL, NULL, key, NULL, encrypt) != 1)
		return -ENOMEM;
	return 0;
}

int srdma_seal_new(struct srdma_seal **out, enum srdma_seal_cipher cipher, bool server,
		   uint32_t epoch, const uint8_t tx_key[SRDMA_SEAL_KEY_LEN],
		   const uint8_t rx_key[SRDMA_SEAL_KEY_LEN])
{
	const EVP_CIPHER *evp = seal_evp(cipher);
	struct srdma_seal *s;

	if (!evp || epoch > SRDMA_SEAL_MAX_EPOCH)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cipher = cipher;
	pthread_mutex_init(&s->tx_lock, NULL);
	if (dir_init(&s->tx, evp, true, server ? 1 : 0, epoch, tx_key) ||
	    dir_init(&s->rx, evp, false, server ? 0 : 1, epoch, rx_key) ||
	    dir_init(&s->rx_prev, evp, false, server ? 0 : 1, epoch, rx_key)) {
		srdma_seal_free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void srdma_seal_free(struct srdma_seal *s)
{
	if (!s)
		return;
	EVP_CIPHER_CTX_free(s->tx.ctx);	/* which wipes the key schedule */
	EVP_CIPHER_CTX_free(s->rx.ctx);
	EVP_CIPHER_CTX_free(s->rx_prev.ctx);
	pthread_mutex_destroy(&s->tx_lock);
	free(s);
}

int srdma_seal_keys(SSL *ssl, uint32_t epoch, uint8_t c2s[SRDMA_SEAL_KEY_LEN],
		    uint8_t s2c[SRDMA_SEAL_KEY_LEN])
{
	uint8_t ctx[4];

	put_u32(ctx, epoch);
	if (SSL_export_keying_material(ssl, c2s, SRDMA_SEAL_KEY_LEN, SEAL_LABEL_C2S,
				       strlen(SEAL_LABEL_C2S), ctx, sizeof(ctx), 1) != 1 ||
	    SSL_export_keying_material(ssl, s2c, SRDMA_SEAL_KEY_LEN, SEAL_LABEL_S2C,
				       strlen(SEAL_LABEL_S2C), ctx, sizeof(ctx), 1) != 1) {
		OPENSSL_cleanse(c2s, SRDMA_SEAL_KEY_LEN);
		OPENSSL_cleanse(s2c, SRDMA_SEAL_KEY_LEN);
		return -EPROTO;
	}
	return 0;
}

static void make_nonce(uint8_t nonce[SEAL_NONCE_LEN], const struct seal_dir *d, uint64_t seq)
{
	put_u32(nonce, d->dir << 31 | d->epoch);
	put_u64(nonce + 4, seq);
}

int srdma_seal_msg(struct srdma_seal *s, uint16_t kind, const void *msg, size_t len,
		   void *out, size_t cap, size_t *out_len)
{
	uint8_t nonce[SEAL_NONCE_LEN], *o = out;
	uint64_t seq;
	int n, rc = 0;

	if (len > SRDMA_MAX_BUF_SIZE)
		return -EMSGSIZE;
	if (cap < len + SRDMA_SEAL_OVERHEAD)
		return -ENOBUFS;
	/* In place (the message already after the header) or apart. */
	if ((const uint8_t *)msg != o + SRDMA_SEAL_HDR_LEN &&
	    (const uint8_t *)msg < o + len + SRDMA_SEAL_OVERHEAD &&
	    o < (const uint8_t *)msg + len)
		return -EINVAL;
	pthread_mutex_lock(&s->tx_lock);
	if (s->tx_dead) {
		rc = -EIO;
		goto out;
	}
	if (s->tx.seq >= SRDMA_SEAL_MAX_MSGS) {
		rc = -EKEYEXPIRED;
		goto out;
	}
	/* The number is used up before the cipher runs: a seal that fails
	 * half-way may have left ciphertext under this nonce in out, and the
	 * next message must not be sealed under it again. */
	seq = s->tx.seq++;
	o[0] = SEAL_VERSION;
	o[1] = 0;
	o[2] = (uint8_t)(kind >> 8);
	o[3] = (uint8_t)kind;
	put_u32(o + 4, s->tx.epoch);
	put_u64(o + 8, seq);
	make_nonce(nonce, &s->tx, seq);
	if (EVP_EncryptInit_ex(s->tx.ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(s->tx.ctx, NULL, &n, o, SRDMA_SEAL_HDR_LEN) != 1 ||
	    (len && EVP_EncryptUpdate(s->tx.ctx, o + SRDMA_SEAL_HDR_LEN, &n, msg, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(s->tx.ctx, o + SRDMA_SEAL_HDR_LEN + len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(s->tx.ctx, EVP_CTRL_AEAD_GET_TAG, SRDMA_SEAL_TAG_LEN,
				o + SRDMA_SEAL_HDR_LEN + len) != 1) {
		OPENSSL_cleanse(o, len + SRDMA_SEAL_OVERHEAD);
		rc = -EIO;
		goto out;
	}
	*out_len = len + SRDMA_SEAL_OVERHEAD;
out:
	pthread_mutex_unlock(&s->tx_lock);
	return rc;
}

/* The first failure ends the direction; why keeps what it was. */
__attribute__((format(printf, 3, 4)))
static int refuse(struct srdma_seal *s, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
	__atomic_store_n(&s->broken, 1, __ATOMIC_RELEASE);
	return rc;
}

int srdma_seal_open(struct srdma_seal *s, void *buf, size_t len, size_t cap, uint16_t *kind,
		    void **msg, size_t *msg_len)
{
	uint8_t nonce[SEAL_NONCE_LEN], *b = buf;
	struct seal_dir *d = &s->rx;
	size_t plen;
	uint64_t seq;
	uint32_t epoch;
	int n;

	if (__atomic_load_n(&s->broken, __ATOMIC_ACQUIRE))
		return -ENOTCONN;
	if (len < SRDMA_SEAL_OVERHEAD)
		return refuse(s, -EBADMSG, "a sealed message of %zu bytes (at least %d)", len,
			      SRDMA_SEAL_OVERHEAD);
	if (len > SRDMA_MAX_BUF_SIZE + (size_t)SRDMA_SEAL_OVERHEAD)
		return refuse(s, -EBADMSG, "a sealed message of %zu bytes (at most %zu)", len,
			      SRDMA_MAX_BUF_SIZE + (size_t)SRDMA_SEAL_OVERHEAD);
	if (len > cap)
		return refuse(s, -EBADMSG, "a sealed message of %zu bytes in a buffer of %zu",
			      len, cap);
	if (b[0] != SEAL_VERSION || b[1] != 0)
		return refuse(s, -EBADMSG, "not a sealed message (version %u, flags 0x%02x)",
			      b[0], b[1]);
	epoch = get_u32(b + 4);
	seq = get_u64(b + 8);
	if (s->prev_open && epoch == s->rx_prev.epoch)
		d = &s->rx_prev;	/* sealed before the peer's switch */
	if (epoch != d->epoch)
		return refuse(s, -EBADMSG, "a sealed message of key epoch %u where %u is in use",
			      epoch, d->epoch);
	if (seq != d->seq)
		return refuse(s, -EBADMSG, "sealed message number %llu where %llu was due (%s)",
			      (unsigned long long)seq, (unsigned long long)d->seq,
			      seq < d->seq ? "replayed" : "reordered, or one is missing");
	plen = len - SRDMA_SEAL_OVERHEAD;
	make_nonce(nonce, d, seq);
	if (EVP_DecryptInit_ex(d->ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(d->ctx, NULL, &n, b, SRDMA_SEAL_HDR_LEN) != 1 ||
	    (plen && EVP_DecryptUpdate(d->ctx, b + SRDMA_SEAL_HDR_LEN, &n,
				       b + SRDMA_SEAL_HDR_LEN, (int)plen) != 1) ||
	    EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, SRDMA_SEAL_TAG_LEN,
				b + SRDMA_SEAL_HDR_LEN + plen) != 1 ||
	    EVP_DecryptFinal_ex(d->ctx, b + SRDMA_SEAL_HDR_LEN + plen, &n) != 1) {
		/* What was decrypted in place is not the sender's: wipe it. */
		OPENSSL_cleanse(b + SRDMA_SEAL_HDR_LEN, plen);
		return refuse(s, -EBADMSG, "sealed message number %llu does not verify "
			      "(forged or altered)", (unsigned long long)seq);
	}
	d->seq++;
	if (d == &s->rx)
		s->prev_open = false;	/* the old epoch's messages are all behind */
	*kind = (uint16_t)(b[2] << 8 | b[3]);
	*msg = b + SRDMA_SEAL_HDR_LEN;
	*msg_len = plen;
	return 0;
}

/* A new key for one direction, from its next message on. */
static int dir_rekey(struct seal_dir *d, bool encrypt, uint32_t epoch,
		     const uint8_t key[SRDMA_SEAL_KEY_LEN])
{
	if (epoch > SRDMA_SEAL_MAX_EPOCH)
		return -EINVAL;
	if (EVP_CipherInit_ex(d->ctx, NULL, NULL, key, NULL, encrypt) != 1)
		return -EIO;
	d->epoch = epoch;
	d->seq = 0;
	return 0;
}

int srdma_seal_rekey_tx(struct srdma_seal *s, uint32_t epoch, const uint8_t key[SRDMA_SEAL_KEY_LEN])
{
	int rc;

	pthread_mutex_lock(&s->tx_lock);
	rc = dir_rekey(&s->tx, true, epoch, key);
	if (rc)
		s->tx_dead = true;	/* which key would the next seal use? */
	pthread_mutex_unlock(&s->tx_lock);
	return rc;
}

int srdma_seal_rekey_rx(struct srdma_seal *s, uint32_t epoch, const uint8_t key[SRDMA_SEAL_KEY_LEN])
{
	struct seal_dir old = s->rx;

	/* The current one stays open (as the previous) for what the peer
	 * sealed before its switch; the new key goes into the other context. */
	s->rx = s->rx_prev;
	s->rx_prev = old;
	s->prev_open = true;
	return dir_rekey(&s->rx, false, epoch, key);
}

const char *srdma_seal_broken(const struct srdma_seal *s)
{
	return s && __atomic_load_n(&s->broken, __ATOMIC_ACQUIRE) ? s->why : NULL;
}

enum srdma_seal_cipher srdma_seal_cipher_of(const struct srdma_seal *s)
{
	return s ? s->cipher : SRDMA_SEAL_OFF;
}

uint64_t srdma_seal_sent(struct srdma_seal *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->tx_lock);
	n = s->tx.seq;
	pthread_mutex_unlock(&s->tx_lock);
	return n;
}
