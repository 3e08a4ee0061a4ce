#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#include "forge.h"

#define ROCE_PORT 4791
#define OP_RC_SEND_ONLY 0x04

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

int forge_send(struct forge *f, uint32_t dqpn, uint32_t psn, const void *payload, size_t plen)
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

static int write_sysctl(const char *path, const char *v)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fputs(v, f);
	return fclose(f) ? -1 : 0;
}

int forge_open(struct forge *f, char *why, size_t why_len)
{
	const char *addr = getenv("RXE_VM_ADDR");

	if (!addr || !read_mac("veth0", f->dst_mac) || !read_mac("veth1", f->src_mac)) {
		snprintf(why, why_len, "needs rxe-vm's veth pair and RXE_VM_ADDR");
		return -ENODEV;
	}
	/* The connection's peer is 10.77.0.1 itself (both ends on rxe0): the
	 * spoofed source is the real client's address. Linux drops packets
	 * from outside with a local source unless told not to. */
	if (write_sysctl("/proc/sys/net/ipv4/conf/all/rp_filter", "0") ||
	    write_sysctl("/proc/sys/net/ipv4/conf/veth0/rp_filter", "0") ||
	    write_sysctl("/proc/sys/net/ipv4/conf/veth0/accept_local", "1")) {
		snprintf(why, why_len, "cannot set the sysctls (root?)");
		return -EPERM;
	}
	if (inet_pton(AF_INET, addr, &f->src_ip) != 1) {
		snprintf(why, why_len, "RXE_VM_ADDR is not an IPv4 address");
		return -EINVAL;
	}
	f->dst_ip = f->src_ip;
	f->ifindex = (int)if_nametoindex("veth1");
	f->fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
	if (f->ifindex <= 0 || f->fd < 0) {
		snprintf(why, why_len, "cannot open a raw socket on veth1: %s", strerror(errno));
		return -errno;
	}
	return 0;
}
