/*
 * PSN generation. A PSN an off-path attacker can guess lets it inject into an
 * RC connection (ReDMArk, USENIX Security 2021), so PSNs come only from the
 * kernel CSPRNG and use all 24 bits. If the generator fails we report it and
 * the connection is refused; we never fall back to time or pid.
 */
#include <errno.h>
#include <string.h>
#include <openssl/crypto.h>
#include <sys/random.h>

#include "srdma.h"
#include "srdma_internal.h"

int srdma_psn_from_source(uint32_t *psn, srdma_random_fn source)
{
	unsigned char b[3];
	size_t have = 0;

	while (have < sizeof(b)) {
		ssize_t n = source(b + have, sizeof(b) - have, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno ? -errno : -EIO;
		}
		if (n == 0 || (size_t)n > sizeof(b) - have)
			return -EIO;
		have += (size_t)n;
	}
	/* Three bytes are exactly 24 bits: uniform, no modulo bias. */
	*psn = (uint32_t)b[0] << 16 | (uint32_t)b[1] << 8 | b[2];
	return 0;
}

int srdma_psn_generate(uint32_t *psn)
{
	return srdma_psn_from_source(psn, getrandom);
}

int srdma_psn_from_exporter(struct srdma_conn *c, uint32_t *own, uint32_t *peer,
			    struct srdma_err *err)
{
	return srdma_psn_from_exporter_epoch(c, 0, own, peer, err);
}

/* Epoch 0 (setup) without a context, as version 2 always did; a rekey's
 * epoch as a 4-byte context. */
int srdma_psn_from_exporter_epoch(struct srdma_conn *c, uint32_t epoch, uint32_t *own,
				  uint32_t *peer, struct srdma_err *err)
{
	static const char label[] = "EXPORTER-srdma-psn";
	unsigned char k[6], ctx[4] = { (unsigned char)(epoch >> 24), (unsigned char)(epoch >> 16),
				      (unsigned char)(epoch >> 8), (unsigned char)epoch };
	uint32_t client, server;

	if (SSL_export_keying_material(c->ssl, k, sizeof(k), label, strlen(label),
				       epoch ? ctx : NULL, epoch ? sizeof(ctx) : 0,
				       epoch ? 1 : 0) != 1) {
		srdma_set_err(err, -EPROTO, "generate PSN", "TLS exporter failed");
		return -EPROTO;
	}
	client = (uint32_t)k[0] << 16 | (uint32_t)k[1] << 8 | k[2];
	server = (uint32_t)k[3] << 16 | (uint32_t)k[4] << 8 | k[5];
	OPENSSL_cleanse(k, sizeof(k));
	*own = c->server ? server : client;
	*peer = c->server ? client : server;
	return 0;
}
