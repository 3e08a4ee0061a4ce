/*
 * Off-path injection, for real: forged RoCE v2 packets (Ethernet, IPv4 with
 * a spoofed source, UDP 4791, BTH, a valid ICRC) enter through the far end
 * of the veth pair that carries rxe0 (an AF_PACKET socket on veth1), so they
 * arrive at the rxe netdev as a packet from the wire would.
 *
 * Control: a SEND with the QP's correct next PSN (read on the server side
 * with ibv_query_qp, which an off-path attacker cannot do) is delivered.
 * Attack: thousands of SENDs with other PSNs deliver nothing, the port's
 * sequence counters see them, and the real connection keeps working.
 *
 * Needs the rxe-vm single-guest layout (RXE_VM_NETDEV=veth0); skipped
 * elsewhere.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "pair.h"

#define ROCE_PORT 4791
#define OP_RC_SEND_ONLY 0x04


/* --- packet forging --------------------------------------------------- */

struct forge {
	int fd;
	int ifindex;
	uint8_t dst_mac[6], src_mac[6];
	uint32_t src_ip, dst_ip;	/* network order */
};

static uint32_t crc32_le(uint32_t crc, const uint8_t *p, size_t n)
{
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
	}
	return crc;
}

static uint16_t ip_checksum(const uint8_t *h, size_t n)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < n; i += 2)
		sum += (uint32_t)h[i] << 8 | h[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put24(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 16);
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)v;
}

/* Build and send one RC SEND_ONLY to (dqpn, psn) carrying payload. */
static int inject_bytes(struct forge *f, uint32_t dqpn, uint32_t psn,
			const void *payload, size_t plen)
{
	uint8_t pkt[256], icrc_in[256];
	size_t pad = (4 - plen % 4) % 4;
	size_t ip_len = 20 + 8 + 12 + plen + pad + 4;
	uint8_t *ip = pkt + 14, *udp = ip + 20, *bth = udp + 8, *data = bth + 12;
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = f->ifindex,
				  .sll_halen = 6 };
	uint32_t crc;
	size_t n;

	memset(pkt, 0, sizeof(pkt));
	memcpy(pkt, f->dst_mac, 6);
	memcpy(pkt + 6, f->src_mac, 6);
	put16(pkt + 12, ETH_P_IP);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)ip_len);
	put16(ip + 6, 0x4000);		/* DF */
	ip[8] = 64;
	ip[9] = IPPROTO_UDP;
	memcpy(ip + 12, &f->src_ip, 4);
	memcpy(ip + 16, &f->dst_ip, 4);
	put16(ip + 10, ip_checksum(ip, 20));
	put16(udp, 0xc000);
	put16(udp + 2, ROCE_PORT);
	put16(udp + 4, (uint16_t)(ip_len - 20));
	bth[0] = OP_RC_SEND_ONLY;
	bth[1] = (uint8_t)(pad << 4);
	put16(bth + 2, 0xffff);		/* default P_Key */
	put24(bth + 5, dqpn);
	bth[8] = 0x80;			/* AckReq */
	put24(bth + 9, psn);
	memcpy(data, payload, plen);

	/* ICRC (as rxe computes it): CRC-32 seeded with 8 bytes of 0xff, over
	 * the IP, UDP and BTH headers with the variant fields masked to ones,
	 * then the payload and pad; stored inverted, little-endian. */
	n = ip_len - 4;
	memcpy(icrc_in, ip, n);
	icrc_in[1] = 0xff;			/* TOS */
	icrc_in[8] = 0xff;			/* TTL */
	icrc_in[10] = icrc_in[11] = 0xff;	/* IP checksum */
	icrc_in[26] = icrc_in[27] = 0xff;	/* UDP checksum */
	icrc_in[32] = 0xff;			/* BTH resv8a */
	crc = ~crc32_le(0xdebb20e3u, icrc_in, n);
	memcpy(ip + n, &crc, 4);

	memcpy(to.sll_addr, f->dst_mac, 6);
	if (sendto(f->fd, pkt, 14 + ip_len, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		return -errno;
	return 0;
}

static int inject_send(struct forge *f, uint32_t dqpn, uint32_t psn, const char *payload)
{
	return inject_bytes(f, dqpn, psn, payload, strlen(payload));
}

static bool read_mac(const char *ifname, uint8_t mac[6])
{
	char path[128];
	unsigned int b[6];
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fscanf(f, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]);
	fclose(f);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return n == 6;
}

static void write_sysctl(const char *path, const char *v)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(v, f);
	fclose(f);
}

static long long counter(const char *dev, const char *name)
{
	char path[256];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/1/hw_counters/%s", dev, name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static void forge_open(struct forge *f)
{
	const char *addr = getenv("RXE_VM_ADDR");

	assert_non_null(addr);
	assert_true(read_mac("veth0", f->dst_mac));
	assert_true(read_mac("veth1", f->src_mac));
	/* The connection's peer is 10.77.0.1 itself (both ends on rxe0): the
	 * spoofed source is the real client's address. Linux drops packets
	 * from outside with a local source unless told not to. */
	write_sysctl("/proc/sys/net/ipv4/conf/all/rp_filter", "0");
	write_sysctl("/proc/sys/net/ipv4/conf/veth0/rp_filter", "0");
	write_sysctl("/proc/sys/net/ipv4/conf/veth0/accept_local", "1");
	assert_int_equal(inet_pton(AF_INET, addr, &f->src_ip), 1);
	f->dst_ip = f->src_ip;
	f->ifindex = (int)if_nametoindex("veth1");
	assert_true(f->ifindex > 0);
	f->fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
	assert_true(f->fd >= 0);
}

/* --- a real connection ---------------------------------------------------- */

static uint32_t expected_psn(struct srdma_conn *server)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;

	assert_int_equal(ibv_query_qp(srdma_conn_qp(server), &a, IBV_QP_RQ_PSN, &ia), 0);
	return a.rq_psn;
}

/* The next receive on c within ms, or fail; returns its payload length. */
static int next_recv(struct srdma_conn *c, int ms, char *out, size_t cap)
{
	struct ibv_wc wc;
	int n;

	while ((n = srdma_conn_next_wc(c, ms, &wc)) == 1) {
		assert_int_equal(wc.status, IBV_WC_SUCCESS);
		if (wc.opcode == IBV_WC_RECV) {
			size_t len = wc.byte_len < cap - 1 ? wc.byte_len : cap - 1;

			memcpy(out, (char *)srdma_conn_recv_buf(c)->addr +
			       wc.wr_id * srdma_conn_buf_size(c), len);
			out[len] = '\0';
			srdma_conn_post_recv(c, (unsigned int)wc.wr_id);
			return (int)wc.byte_len;
		}
	}
	return -1;
}

static void real_send(struct srdma_conn *c, const char *text)
{
	const struct srdma_buf *b = srdma_conn_send_buf(c);
	struct ibv_sge sge = { .addr = (uintptr_t)b->addr, .length = (uint32_t)strlen(text),
			       .lkey = b->lkey };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct ibv_wc wc;

	memcpy(b->addr, text, strlen(text));
	assert_int_equal(ibv_post_send(srdma_conn_qp(c), &wr, &bad), 0);
	assert_int_equal(srdma_conn_next_wc(c, 5000, &wc), 1);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
}

static void control_correct_psn_is_delivered(void **state)
{
	struct srdma_listener *l = pair_listen(SRDMA_PSN_EXCHANGE);
	struct srdma_conn *s, *c;
	struct forge f;
	char got[64];
	uint32_t psn;

	(void)state;
	forge_open(&f);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	psn = expected_psn(s);
	assert_int_equal(inject_send(&f, srdma_conn_info(s)->local_qpn, psn, "injected!"), 0);
	assert_int_equal(next_recv(s, 5000, got, sizeof(got)), 9);
	assert_string_equal(got, "injected!");
	print_message("control: a forged SEND with the right PSN 0x%06x was delivered\n", psn);
	close(f.fd);
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
}

static void wrong_psns_deliver_nothing(void **state)
{
	struct srdma_listener *l = pair_listen(SRDMA_PSN_EXCHANGE);
	struct srdma_conn *s, *c;
	const char *dev;
	long long before_oos, before_dup, after_oos, after_dup;
	struct forge f;
	char got[64];
	uint32_t expect, qpn;
	int sent = 0;

	(void)state;
	forge_open(&f);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	dev = srdma_conn_info(s)->dev_name;
	qpn = srdma_conn_info(s)->local_qpn;
	expect = expected_psn(s);
	before_oos = counter(dev, "out_of_seq_request");
	before_dup = counter(dev, "duplicate_request");
	for (int i = 0; i < 5000; i++) {
		uint32_t psn;

		assert_int_equal(getrandom(&psn, sizeof(psn), 0), (ssize_t)sizeof(psn));
		psn &= SRDMA_PSN_MASK;
		if (psn == expect)
			continue;	/* the one guess that would land */
		assert_int_equal(inject_send(&f, qpn, psn, "injected!"), 0);
		sent++;
	}
	/* Nothing may arrive. */
	assert_int_equal(next_recv(s, 2000, got, sizeof(got)), -1);
	after_oos = counter(dev, "out_of_seq_request");
	after_dup = counter(dev, "duplicate_request");
	print_message("attack: %d forged SENDs with wrong PSNs, none delivered; "
		      "out_of_seq_request +%lld, duplicate_request +%lld\n", sent,
		      after_oos - before_oos, after_dup - before_dup);
	/* The device saw them (and dropped them). */
	assert_true(after_oos - before_oos + after_dup - before_dup > 0);
	/* The real connection still works, in order. */
	real_send(c, "still here");
	assert_int_equal(next_recv(s, 5000, got, sizeof(got)), 10);
	assert_string_equal(got, "still here");
	close(f.fd);
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
}

/*
 * Sealed: the same forged SEND, with the right PSN, shaped as the next
 * sealed message (version 1, epoch 0, number 0) and a made-up tag. The
 * device delivers it (the PSN is right); srdma_conn_open() refuses it and
 * the connection ends, so the injector gets nothing in. The control is
 * control_correct_psn_is_delivered: unsealed, the program takes it.
 */
static void sealed_injection_is_refused(void **state)
{
	struct srdma_listener *l;
	struct srdma_conn *s, *c;
	uint8_t forged[16 + 9 + 16] = { 1, 0, 0, 1 };	/* version 1, kind 1 */
	struct srdma_err err;
	struct forge f;
	struct ibv_wc wc;
	uint16_t kind;
	void *msg;
	size_t mlen;
	uint8_t *p;

	(void)state;
	pair_seal = SRDMA_SEAL_AES_256_GCM;
	forge_open(&f);
	l = pair_listen(SRDMA_PSN_EXCHANGE);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	memcpy(forged + 16, "injected!", 9);
	assert_int_equal(inject_bytes(&f, srdma_conn_info(s)->local_qpn, expected_psn(s),
				      forged, sizeof(forged)), 0);
	do
		assert_int_equal(srdma_conn_next_wc(s, 5000, &wc), 1);
	while (wc.opcode != IBV_WC_RECV);
	assert_int_equal(wc.status, IBV_WC_SUCCESS);
	assert_int_equal(wc.byte_len, sizeof(forged));
	p = (uint8_t *)srdma_conn_recv_buf(s)->addr + wc.wr_id * srdma_conn_buf_size(s);
	assert_int_equal(srdma_conn_open(s, p, wc.byte_len, &kind, &msg, &mlen), -EBADMSG);
	assert_int_equal(srdma_conn_poll_ctrl(s, &err), SRDMA_CLOSE_PROTOCOL);
	print_message("sealed: the forged SEND with the right PSN was delivered by the "
		      "device and refused: %s\n", err.msg);
	assert_non_null(strstr(err.msg, "does not verify"));
	close(f.fd);
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
	pair_seal = 0;
}

/* Drive both ends until a rekey has finished on both (no traffic: the
 * markers are the only messages). */
static void finish_rekey(struct srdma_conn *a, struct srdma_conn *b)
{
	int64_t spins = 0;

	while (srdma_conn_rekeying(a) || srdma_conn_rekeying(b)) {
		struct ibv_wc wc[4];
		struct srdma_err err;

		assert_true(srdma_conn_poll_wc(a, wc, 4) >= 0);
		assert_true(srdma_conn_poll_wc(b, wc, 4) >= 0);
		assert_int_equal(srdma_conn_poll_ctrl(a, &err), 0);
		assert_int_equal(srdma_conn_poll_ctrl(b, &err), 0);
		assert_true(++spins < 50000000);
	}
}

/*
 * After a rekey the old QP is gone: a SEND forged with the old QPN and the
 * PSN it was waiting for (which an attacker who had learnt both would
 * use) delivers nothing. Control: the same forgery against the new QP,
 * with its PSN, is delivered (the path works; before the rekey, see
 * control_correct_psn_is_delivered).
 */
static void old_qp_is_dead_after_a_rekey(void **state)
{
	struct srdma_listener *l = pair_listen(SRDMA_PSN_EXCHANGE);
	struct srdma_conn *s, *c;
	uint32_t old_qpn, old_psn;
	struct srdma_err err;
	struct forge f;
	char got[64];

	(void)state;
	forge_open(&f);
	pair_connect(l, SRDMA_PSN_EXCHANGE, &s, &c);
	old_qpn = srdma_conn_info(s)->local_qpn;
	old_psn = expected_psn(s);
	assert_int_equal(srdma_conn_rekey(c, &err), 0);
	finish_rekey(c, s);
	assert_int_not_equal(srdma_conn_info(s)->local_qpn, old_qpn);
	assert_int_equal(inject_send(&f, old_qpn, old_psn, "to the old QP"), 0);
	assert_int_equal(next_recv(s, 2000, got, sizeof(got)), -1);
	print_message("after a rekey: a forged SEND to the old QPN 0x%x with its PSN 0x%06x "
		      "delivered nothing\n", old_qpn, old_psn);
	assert_int_equal(inject_send(&f, srdma_conn_info(s)->local_qpn, expected_psn(s),
				     "to the new QP"), 0);
	assert_int_equal(next_recv(s, 5000, got, sizeof(got)), 13);
	assert_string_equal(got, "to the new QP");
	print_message("control: the same forgery against the new QP 0x%x was delivered\n",
		      srdma_conn_info(s)->local_qpn);
	close(f.fd);
	srdma_conn_close(c, 0, NULL);
	srdma_conn_close(s, 0, NULL);
	srdma_listener_free(l);
}

static int setup(void **state)
{
	const char *nd = getenv("RXE_VM_NETDEV");

	(void)state;
	if (!nd || strcmp(nd, "veth0") != 0) {
		fprintf(stderr, "skipped: needs tests/vm/rxe-vm's veth pair (RXE_VM_NETDEV=veth0)\n");
		exit(77);
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(control_correct_psn_is_delivered),
		cmocka_unit_test(wrong_psns_deliver_nothing),
		cmocka_unit_test(sealed_injection_is_refused),
		cmocka_unit_test(old_qp_is_dead_after_a_rekey),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
