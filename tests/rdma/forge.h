/*
 * Forged RoCE v2 packets (Ethernet, IPv4 with a spoofed source, UDP 4791,
 * BTH, a valid ICRC), sent through the far end (veth1) of the veth pair
 * that carries rxe0 in tests/vm/rxe-vm's single-guest layout, so they
 * arrive at the rxe netdev as a packet from the wire would: an off-path
 * injector. Used by test_inject and the inject tool.
 */
#ifndef SRDMA_TEST_FORGE_H
#define SRDMA_TEST_FORGE_H

#include <stddef.h>
#include <stdint.h>

struct forge {
	int fd;
	int ifindex;
	uint8_t dst_mac[6], src_mac[6];
	uint32_t src_ip, dst_ip;	/* network order */
};

/* Open the raw socket on veth1, aimed at RXE_VM_ADDR (both ends of the
 * connection are on rxe0, so the spoofed source is that address too).
 * 0, or a negative errno with why filled. */
int forge_open(struct forge *f, char *why, size_t why_len);
/* One RC SEND_ONLY to (dqpn, psn) carrying len bytes: 0 or -errno. */
int forge_send(struct forge *f, uint32_t dqpn, uint32_t psn, const void *payload, size_t len);

#endif
