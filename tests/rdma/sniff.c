/*
 * sniff: an observer on the link. Captures every frame on an interface
 * (AF_PACKET, as tcpdump would) until a stop file appears, and counts the
 * RoCE v2 frames (UDP port 4791, either way) and, for each marker string,
 * the RoCE frames whose bytes contain it. Prints one line per marker:
 *
 *	roce_frames N
 *	marker STRING frames N
 *
 * Usage: sniff IFACE STOPFILE MARKER... (as root; gives up after 900 s)
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#define ROCE_PORT 4791
#define MAX_MARKERS 8

/* UDP to or from 4791 over IPv4 (what rxe sends on a RoCE v2 GID). */
static int is_roce(const unsigned char *f, size_t n)
{
	size_t ihl;
	unsigned int sport, dport;

	if (n < 14 + 20 + 8 || f[12] != 0x08 || f[13] != 0x00)
		return 0;
	ihl = (size_t)(f[14] & 0x0f) * 4;
	if (ihl < 20 || n < 14 + ihl + 8 || f[14 + 9] != 17)
		return 0;
	sport = (unsigned int)f[14 + ihl] << 8 | f[14 + ihl + 1];
	dport = (unsigned int)f[14 + ihl + 2] << 8 | f[14 + ihl + 3];
	return sport == ROCE_PORT || dport == ROCE_PORT;
}

int main(int argc, char **argv)
{
	static unsigned char frame[65536];
	unsigned long roce = 0, hits[MAX_MARKERS] = { 0 };
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	time_t give_up = time(NULL) + 900;
	int fd, nmark = argc - 3;

	if (argc < 4 || nmark > MAX_MARKERS) {
		fprintf(stderr, "usage: sniff IFACE STOPFILE MARKER...\n");
		return 2;
	}
	fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd >= 0)	/* room for a burst between two reads (root may) */
		setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &(int){ 8 << 20 }, sizeof(int));
	sll.sll_ifindex = (int)if_nametoindex(argv[1]);
	if (fd < 0 || !sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof(sll))) {
		fprintf(stderr, "sniff: cannot capture on %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	/* Ready: the caller waits for this line before it sends anything. */
	printf("capturing on %s\n", argv[1]);
	fflush(stdout);
	while (access(argv[2], F_OK) != 0 && time(NULL) < give_up) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 200) <= 0)
			continue;
		while ((n = recv(fd, frame, sizeof(frame), MSG_DONTWAIT)) > 0) {
			if (!is_roce(frame, (size_t)n))
				continue;
			roce++;
			for (int i = 0; i < nmark; i++)
				if (memmem(frame, (size_t)n, argv[3 + i], strlen(argv[3 + i])))
					hits[i]++;
		}
	}
	printf("roce_frames %lu\n", roce);
	for (int i = 0; i < nmark; i++)
		printf("marker %s frames %lu\n", argv[3 + i], hits[i]);
	return 0;
}
