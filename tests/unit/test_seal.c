/*
 * Sealed messages (src/lib/seal.c), without RDMA: what opens and what does
 * not. Every refusal has its control: the same message, untouched and in
 * order, opens.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "srdma_internal.h"

static const uint8_t key_c2s[SRDMA_SEAL_KEY_LEN] = "client to server key, 32 bytes!";
static const uint8_t key_s2c[SRDMA_SEAL_KEY_LEN] = "server to client key, 32 bytes!";

struct ends {
	struct srdma_seal *client, *server;
};

static void ends_make(struct ends *e, enum srdma_seal_cipher cipher, uint32_t epoch)
{
	assert_int_equal(srdma_seal_new(&e->client, cipher, false, epoch, key_c2s, key_s2c), 0);
	assert_int_equal(srdma_seal_new(&e->server, cipher, true, epoch, key_s2c, key_c2s), 0);
}

static void ends_free(struct ends *e)
{
	srdma_seal_free(e->client);
	srdma_seal_free(e->server);
}

static const enum srdma_seal_cipher ciphers[] = { SRDMA_SEAL_AES_256_GCM,
						   SRDMA_SEAL_CHACHA20_POLY1305 };

static void seal_ok(struct srdma_seal *s, uint16_t kind, const char *text, uint8_t *out,
		    size_t cap, size_t *len)
{
	assert_int_equal(srdma_seal_msg(s, kind, text, strlen(text), out, cap, len), 0);
	assert_int_equal(*len, strlen(text) + SRDMA_SEAL_OVERHEAD);
}

static void open_ok(struct srdma_seal *s, uint8_t *buf, size_t len, uint16_t want_kind,
		    const char *want)
{
	uint16_t kind = 0;
	void *msg = NULL;
	size_t mlen = 0;

	assert_int_equal(srdma_seal_open(s, buf, len, len, &kind, &msg, &mlen), 0);
	assert_int_equal(kind, want_kind);
	assert_int_equal(mlen, strlen(want));
	assert_ptr_equal(msg, buf + SRDMA_SEAL_HDR_LEN);
	assert_memory_equal(msg, want, mlen);
	assert_null(srdma_seal_broken(s));
}

static void open_refused(struct srdma_seal *s, uint8_t *buf, size_t len, const char *why)
{
	uint16_t kind;
	void *msg;
	size_t mlen;

	assert_int_equal(srdma_seal_open(s, buf, len, len, &kind, &msg, &mlen), -EBADMSG);
	assert_non_null(srdma_seal_broken(s));
	if (why && !strstr(srdma_seal_broken(s), why))
		fail_msg("refused for '%s', expected '%s'", srdma_seal_broken(s), why);
	/* Broken for good: even a good message is refused now. */
	assert_int_equal(srdma_seal_open(s, buf, len, len, &kind, &msg, &mlen), -ENOTCONN);
}

/* Both directions, both ciphers, empty to large, apart and in place. */
static void round_trips(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(ciphers) / sizeof(ciphers[0]); k++) {
		struct ends e;
		uint8_t buf[70000];
		size_t len;

		ends_make(&e, ciphers[k], 0);
		for (int i = 0; i < 50; i++) {
			seal_ok(e.client, 7, "hello over the QP", buf, sizeof(buf), &len);
			/* The ciphertext is not the message. */
			assert_null(memmem(buf, len, "hello", 5));
			open_ok(e.server, buf, len, 7, "hello over the QP");
			seal_ok(e.server, 8, "and back", buf, sizeof(buf), &len);
			open_ok(e.client, buf, len, 8, "and back");
		}
		seal_ok(e.client, 0, "", buf, sizeof(buf), &len);
		open_ok(e.server, buf, len, 0, "");

		/* In place: the message already after the header. */
		uint8_t *big = malloc(65536 + SRDMA_SEAL_OVERHEAD);
		assert_non_null(big);
		for (size_t i = 0; i < 65536; i++)
			big[SRDMA_SEAL_HDR_LEN + i] = (uint8_t)(i * 7);
		assert_int_equal(srdma_seal_msg(e.server, 1, big + SRDMA_SEAL_HDR_LEN, 65536, big,
						65536 + SRDMA_SEAL_OVERHEAD, &len), 0);
		uint16_t kind;
		void *msg;
		size_t mlen;
		assert_int_equal(srdma_seal_open(e.client, big, len, len, &kind, &msg, &mlen), 0);
		assert_int_equal(mlen, 65536);
		for (size_t i = 0; i < 65536; i++)
			assert_int_equal(((uint8_t *)msg)[i], (uint8_t)(i * 7));
		free(big);
		ends_free(&e);
	}
}

/* Every single bit flipped, header, ciphertext or tag, is refused. */
static void any_flipped_bit_is_refused(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(ciphers) / sizeof(ciphers[0]); k++) {
		const char *text = "transfer 100 to account 42";
		uint8_t sealed[128], buf[128];
		size_t len;
		struct ends e;

		ends_make(&e, ciphers[k], 3);
		seal_ok(e.client, 2, text, sealed, sizeof(sealed), &len);
		ends_free(&e);
		for (size_t bit = 0; bit < len * 8; bit++) {
			ends_make(&e, ciphers[k], 3);
			memcpy(buf, sealed, len);
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			open_refused(e.server, buf, len, NULL);
			ends_free(&e);
		}
		/* Control: untouched, it opens. */
		ends_make(&e, ciphers[k], 3);
		memcpy(buf, sealed, len);
		open_ok(e.server, buf, len, 2, text);
		/* Cut short or lengthened: refused. */
		ends_free(&e);
		ends_make(&e, ciphers[k], 3);
		memcpy(buf, sealed, len);
		open_refused(e.server, buf, len - 1, "does not verify");
		ends_free(&e);
		ends_make(&e, ciphers[k], 3);
		memcpy(buf, sealed, len);
		buf[len] = 0;
		open_refused(e.server, buf, len + 1, "does not verify");
		ends_free(&e);
		ends_make(&e, ciphers[k], 3);
		open_refused(e.server, buf, SRDMA_SEAL_OVERHEAD - 1, "at least");
		ends_free(&e);
	}
}

static void replay_is_refused(void **state)
{
	struct ends e;
	uint8_t a[64], copy[64];
	size_t len;

	(void)state;
	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	seal_ok(e.client, 1, "pay once", a, sizeof(a), &len);
	memcpy(copy, a, len);
	open_ok(e.server, a, len, 1, "pay once");
	open_refused(e.server, copy, len, "replayed");
	ends_free(&e);
}

static void reorder_and_loss_are_refused(void **state)
{
	struct ends e;
	uint8_t a[64], b[64];
	size_t la, lb;

	(void)state;
	ends_make(&e, SRDMA_SEAL_CHACHA20_POLY1305, 0);
	seal_ok(e.client, 1, "first", a, sizeof(a), &la);
	seal_ok(e.client, 1, "second", b, sizeof(b), &lb);
	open_refused(e.server, b, lb, "reordered");
	ends_free(&e);
	/* Control: in order, both open. */
	ends_make(&e, SRDMA_SEAL_CHACHA20_POLY1305, 0);
	seal_ok(e.client, 1, "first", a, sizeof(a), &la);
	seal_ok(e.client, 1, "second", b, sizeof(b), &lb);
	open_ok(e.server, a, la, 1, "first");
	open_ok(e.server, b, lb, 1, "second");
	ends_free(&e);
}

/* A message sent back to its sender, or sealed under another epoch's
 * keys or another cipher, does not open. */
static void reflection_epoch_and_cipher(void **state)
{
	struct ends e, other;
	uint8_t a[64];
	size_t len;

	(void)state;
	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	seal_ok(e.server, 1, "to the client", a, sizeof(a), &len);
	open_refused(e.server, a, len, "does not verify");
	ends_free(&e);

	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	ends_make(&other, SRDMA_SEAL_AES_256_GCM, 1);
	seal_ok(other.client, 1, "epoch 1", a, sizeof(a), &len);
	open_refused(e.server, a, len, "epoch 1 where 0");
	ends_free(&e);
	ends_free(&other);

	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	ends_make(&other, SRDMA_SEAL_CHACHA20_POLY1305, 0);
	seal_ok(other.client, 1, "chacha", a, sizeof(a), &len);
	open_refused(e.server, a, len, "does not verify");
	ends_free(&e);
	ends_free(&other);

	/* The same keys in both directions are still told apart: the
	 * direction bit is in the nonce. */
	assert_int_equal(srdma_seal_new(&e.client, SRDMA_SEAL_AES_256_GCM, false, 0, key_c2s,
					key_c2s), 0);
	seal_ok(e.client, 1, "mirror", a, sizeof(a), &len);
	open_refused(e.client, a, len, "does not verify");
	srdma_seal_free(e.client);
}

/* The format is what docs/PROTOCOL.md says: opened here by plain EVP with
 * the documented nonce and additional data, not by seal.c. */
static void format_as_documented(void **state)
{
	for (size_t k = 0; k < sizeof(ciphers) / sizeof(ciphers[0]); k++) {
		struct ends e;
		uint8_t buf[64], nonce[12], plain[64];
		const char *text = "documented";
		size_t len, plen;
		int n;

		(void)state;
		ends_make(&e, ciphers[k], 5);
		seal_ok(e.client, 1, "zero", buf, sizeof(buf), &len);	/* number 0 */
		seal_ok(e.client, 0x1234, text, buf, sizeof(buf), &len);	/* number 1 */
		ends_free(&e);
		assert_int_equal(buf[0], 1);		/* version */
		assert_int_equal(buf[1], 0);		/* flags */
		assert_int_equal(buf[2] << 8 | buf[3], 0x1234);
		assert_int_equal(buf[4] << 24 | buf[5] << 16 | buf[6] << 8 | buf[7], 5);
		for (int i = 8; i < 15; i++)
			assert_int_equal(buf[i], 0);
		assert_int_equal(buf[15], 1);
		/* Client to server: direction 0. */
		memset(nonce, 0, sizeof(nonce));
		nonce[3] = 5;
		nonce[11] = 1;
		plen = len - SRDMA_SEAL_OVERHEAD;
		EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
		assert_non_null(ctx);
		assert_int_equal(EVP_DecryptInit_ex(ctx, ciphers[k] == SRDMA_SEAL_AES_256_GCM ?
						    EVP_aes_256_gcm() : EVP_chacha20_poly1305(),
						    NULL, NULL, NULL), 1);
		assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL), 1);
		assert_int_equal(EVP_DecryptInit_ex(ctx, NULL, NULL, key_c2s, nonce), 1);
		assert_int_equal(EVP_DecryptUpdate(ctx, NULL, &n, buf, 16), 1);
		assert_int_equal(EVP_DecryptUpdate(ctx, plain, &n, buf + 16, (int)plen), 1);
		assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16,
						     buf + 16 + plen), 1);
		assert_int_equal(EVP_DecryptFinal_ex(ctx, plain + n, &n), 1);
		assert_memory_equal(plain, text, strlen(text));
		EVP_CIPHER_CTX_free(ctx);
	}
}

/* A rekey moves each direction on its own: what the peer sealed before its
 * switch still opens after ours moved rx on, until the first message of
 * the new epoch; then the old epoch is closed for good. */
static void rekey_keeps_order_across_epochs(void **state)
{
	static const uint8_t k1[SRDMA_SEAL_KEY_LEN] = "epoch one key, thirty-two bytes";
	struct ends e;
	uint8_t a[64], b[64], c2[64], replay[64];
	size_t la, lb, lc;

	(void)state;
	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	seal_ok(e.client, 1, "old epoch", a, sizeof(a), &la);
	memcpy(replay, a, la);
	assert_int_equal(srdma_seal_rekey_tx(e.client, 1, k1), 0);
	seal_ok(e.client, 1, "new epoch", b, sizeof(b), &lb);
	assert_int_equal(b[7], 1);		/* epoch 1 */
	assert_int_equal(b[15], 0);		/* numbers from 0 again */
	/* The receiver moved on at the marker, before opening "old epoch". */
	assert_int_equal(srdma_seal_rekey_rx(e.server, 1, k1), 0);
	open_ok(e.server, a, la, 1, "old epoch");
	open_ok(e.server, b, lb, 1, "new epoch");
	/* The old epoch is over: its message again is refused. */
	open_refused(e.server, replay, la, "epoch 0 where 1");
	ends_free(&e);

	/* An old-epoch message after a new one: refused too. */
	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	seal_ok(e.client, 1, "old", a, sizeof(a), &la);
	seal_ok(e.client, 1, "old 2", c2, sizeof(c2), &lc);
	assert_int_equal(srdma_seal_rekey_tx(e.client, 1, k1), 0);
	seal_ok(e.client, 1, "new", b, sizeof(b), &lb);
	assert_int_equal(srdma_seal_rekey_rx(e.server, 1, k1), 0);
	open_ok(e.server, a, la, 1, "old");
	open_ok(e.server, b, lb, 1, "new");
	open_refused(e.server, c2, lc, "epoch 0 where 1");
	ends_free(&e);
}

/* A length beyond the buffer (a WRITE's length is the peer's word) is
 * refused before a byte past it is read. Control: the same message with
 * its buffer's true size opens. */
static void length_beyond_the_buffer_is_refused(void **state)
{
	uint8_t buf[64], kept[64];
	uint16_t kind;
	void *msg;
	size_t len, mlen;
	struct ends e;

	(void)state;
	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	seal_ok(e.client, 1, "twenty bytes of text", buf, sizeof(buf), &len);
	memcpy(kept, buf, len);
	assert_int_equal(srdma_seal_open(e.server, buf, len, len - 1, &kind, &msg, &mlen),
			 -EBADMSG);
	assert_non_null(strstr(srdma_seal_broken(e.server), "in a buffer of"));
	ends_free(&e);
	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	seal_ok(e.client, 1, "twenty bytes of text", buf, sizeof(buf), &len);
	assert_memory_equal(buf, kept, len);	/* the very same bytes */
	open_ok(e.server, buf, len, 1, "twenty bytes of text");
	ends_free(&e);
}

/*
 * One thread seals while another moves its key on (a rekey's switch runs
 * in the thread that polls the control channel): every message must carry
 * the epoch of the key it was sealed under and a number never used before
 * under that key, so that each opens, in order, under its epoch's key. A
 * seal that saw half a new key would repeat a nonce (under GCM that gives
 * away the authentication key) or not open.
 */
#define RACE_MSGS 20000
#define RACE_REKEYS 400
#define RACE_LEN 48

struct race {
	struct srdma_seal *s;
	uint8_t (*out)[RACE_LEN + SRDMA_SEAL_OVERHEAD];
	int sealed;
	int rekeys;		/* done by the other thread */
	int done;
};

static void epoch_key(uint32_t epoch, uint8_t key[SRDMA_SEAL_KEY_LEN])
{
	memcpy(key, key_c2s, SRDMA_SEAL_KEY_LEN);
	key[0] = (uint8_t)epoch;
	key[1] = (uint8_t)(epoch >> 8);
}

static void *race_sealer(void *p)
{
	struct race *r = p;
	uint8_t text[RACE_LEN];
	size_t len;

	for (int i = 0; i < RACE_MSGS; i++) {
		/* Never more than two rekeys' worth ahead of the other
		 * thread (which may not get a core at once), so that the
		 * two keep overlapping. */
		while (i > 40 * (__atomic_load_n(&r->rekeys, __ATOMIC_ACQUIRE) + 2) &&
		       __atomic_load_n(&r->rekeys, __ATOMIC_ACQUIRE) < RACE_REKEYS)
			;
		memset(text, i & 0xff, sizeof(text));
		if (srdma_seal_msg(r->s, 1, text, sizeof(text), r->out[i], sizeof(r->out[i]), &len))
			break;
		__atomic_store_n(&r->sealed, i + 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void sealing_during_a_key_switch(void **state)
{
	struct race r = { 0 };
	uint8_t key[SRDMA_SEAL_KEY_LEN];
	pthread_t t;
	uint32_t epoch = 0;
	int opened = 0;

	(void)state;
	r.out = calloc(RACE_MSGS, sizeof(*r.out));
	assert_non_null(r.out);
	epoch_key(0, key);
	assert_int_equal(srdma_seal_new(&r.s, SRDMA_SEAL_AES_256_GCM, false, 0, key, key_s2c), 0);
	assert_int_equal(pthread_create(&t, NULL, race_sealer, &r), 0);
	while (!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE) && epoch < RACE_REKEYS) {
		/* A new key every 40 messages (the sealer may be up to 80
		 * ahead: never waiting on each other). */
		while (__atomic_load_n(&r.sealed, __ATOMIC_ACQUIRE) < 40 * ((int)epoch + 1) &&
		       !__atomic_load_n(&r.done, __ATOMIC_ACQUIRE))
			;
		epoch_key(++epoch, key);
		assert_int_equal(srdma_seal_rekey_tx(r.s, epoch, key), 0);
		__atomic_store_n(&r.rekeys, (int)epoch, __ATOMIC_RELEASE);
	}
	pthread_join(t, NULL);
	assert_int_equal(r.sealed, RACE_MSGS);
	assert_int_equal(epoch, RACE_REKEYS);

	/* Open them all, in the order sealed, each under its epoch's key. */
	struct srdma_seal *rx = NULL;
	uint32_t rx_epoch = UINT32_MAX;

	for (int i = 0; i < RACE_MSGS; i++) {
		uint32_t e = (uint32_t)r.out[i][4] << 24 | (uint32_t)r.out[i][5] << 16 |
			     (uint32_t)r.out[i][6] << 8 | r.out[i][7];
		uint16_t kind;
		void *msg;
		size_t mlen;

		if (e != rx_epoch) {
			assert_true(rx_epoch == UINT32_MAX || e > rx_epoch);
			srdma_seal_free(rx);
			epoch_key(e, key);
			assert_int_equal(srdma_seal_new(&rx, SRDMA_SEAL_AES_256_GCM, true, e,
							key_s2c, key), 0);
			rx_epoch = e;
		}
		if (srdma_seal_open(rx, r.out[i], sizeof(r.out[i]), sizeof(r.out[i]), &kind, &msg,
				    &mlen))
			fail_msg("message %d (epoch %u) does not open: %s", i, e,
				 srdma_seal_broken(rx));
		assert_int_equal(((uint8_t *)msg)[0], i & 0xff);
		opened++;
	}
	assert_int_equal(opened, RACE_MSGS);
	srdma_seal_free(rx);
	srdma_seal_free(r.s);
	free(r.out);
}

static void bad_arguments(void **state)
{
	struct ends e;
	uint8_t buf[128];
	size_t len;
	struct srdma_seal *s;

	(void)state;
	assert_int_equal(srdma_seal_new(&s, SRDMA_SEAL_OFF, false, 0, key_c2s, key_s2c), -EINVAL);
	assert_int_equal(srdma_seal_new(&s, 9, false, 0, key_c2s, key_s2c), -EINVAL);
	assert_int_equal(srdma_seal_new(&s, SRDMA_SEAL_AES_256_GCM, false, 0x80000000u, key_c2s,
					key_s2c), -EINVAL);
	ends_make(&e, SRDMA_SEAL_AES_256_GCM, 0);
	assert_int_equal(srdma_seal_msg(e.client, 0, "12345678", 8, buf, 8 + 31, &len), -ENOBUFS);
	/* Overlapping, not in place. */
	assert_int_equal(srdma_seal_msg(e.client, 0, buf + 4, 8, buf, sizeof(buf), &len), -EINVAL);
	/* Neither took a sequence number: the next message is number 0. */
	seal_ok(e.client, 0, "after", buf, sizeof(buf), &len);
	assert_int_equal(buf[15], 0);
	open_ok(e.server, buf, len, 0, "after");
	assert_int_equal(srdma_seal_sent(e.client), 1);
	ends_free(&e);
	assert_string_equal(srdma_seal_name(SRDMA_SEAL_CHACHA20_POLY1305), "chacha20-poly1305");
	assert_string_equal(srdma_seal_name(7), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trips),
		cmocka_unit_test(any_flipped_bit_is_refused),
		cmocka_unit_test(replay_is_refused),
		cmocka_unit_test(reorder_and_loss_are_refused),
		cmocka_unit_test(reflection_epoch_and_cipher),
		cmocka_unit_test(format_as_documented),
		cmocka_unit_test(rekey_keeps_order_across_epochs),
		cmocka_unit_test(length_beyond_the_buffer_is_refused),
		cmocka_unit_test(sealing_during_a_key_switch),
		cmocka_unit_test(bad_arguments),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
