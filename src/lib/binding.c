/*
 * Peer binding: proof that the RDMA peer is the TLS peer.
 *
 * Once both QPs are in RTS, each side's first RDMA message is a SEND of
 * "SRB1" followed by HMAC-SHA256(key, role || own QPN || peer QPN || own PSN
 * || peer PSN), the numbers as the sender sees them, big-endian u32, role
 * 'C' or 'S'. The key is 32 bytes of the TLS exporter ("EXPORTER-srdma-
 * binding"): only the two TLS endpoints can compute it. A QP whose first
 * message does not verify is torn down. The client sends first; the server
 * answers only after verifying.
 *
 * This file makes and checks the message; conn.c moves it over the QP.
 */
#include <errno.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "srdma_internal.h"

#define BINDING_MAGIC "SRB1"
#define BINDING_LABEL "EXPORTER-srdma-binding"

int srdma_binding_fault;	/* tests only: see srdma_internal.h */

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* The MAC a side sends: role 'C' or 'S', the numbers as that side sees them. */
static int binding_mac(SSL *ssl, char role, const struct srdma_params *self,
		       const struct srdma_params *peer, uint8_t mac[32], struct srdma_err *err)
{
	uint8_t key[32], msg[17];
	unsigned int len = 0;

	if (SSL_export_keying_material(ssl, key, sizeof(key), BINDING_LABEL,
				       strlen(BINDING_LABEL), NULL, 0, 0) != 1) {
		srdma_set_err(err, -EPROTO, "peer binding", "TLS exporter failed");
		return -EPROTO;
	}
	msg[0] = (uint8_t)role;
	put_u32(msg + 1, self->qpn);
	put_u32(msg + 5, peer->qpn);
	put_u32(msg + 9, self->psn);
	put_u32(msg + 13, peer->psn);
	if (!HMAC(EVP_sha256(), key, sizeof(key), msg, sizeof(msg), mac, &len) || len != 32) {
		OPENSSL_cleanse(key, sizeof(key));
		srdma_set_err(err, -EPROTO, "peer binding", "HMAC failed");
		return -EPROTO;
	}
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

int srdma_binding_make(SSL *ssl, bool server, const struct srdma_params *local,
		       const struct srdma_params *remote, uint8_t out[SRDMA_BINDING_LEN],
		       struct srdma_err *err)
{
	int rc;

	memcpy(out, BINDING_MAGIC, 4);
	rc = binding_mac(ssl, server ? 'S' : 'C', local, remote, out + 4, err);
	if (rc)
		return rc;
	if (srdma_binding_fault == 1)
		out[4] ^= 0x01;			/* a wrong MAC */
	else if (srdma_binding_fault == 2)
		memcpy(out, "no binding here, just data.........", SRDMA_BINDING_LEN);
	return 0;
}

int srdma_binding_check(SSL *ssl, bool server, const struct srdma_params *local,
			const struct srdma_params *remote, const uint8_t *got, size_t len,
			struct srdma_err *err)
{
	uint8_t want[32];
	int rc = binding_mac(ssl, server ? 'C' : 'S', remote, local, want, err);

	if (rc)
		return rc;
	if (len != SRDMA_BINDING_LEN || memcmp(got, BINDING_MAGIC, 4) != 0 ||
	    CRYPTO_memcmp(got + 4, want, 32) != 0) {
		srdma_set_err(err, -EACCES, "peer binding",
			      "the first RDMA message does not carry the binding MAC: "
			      "the RDMA peer is not the TLS peer");
		return -EACCES;
	}
	return 0;
}
