/* A program built against the installed library only (see install-consumer.sh). */
#include <stdio.h>
#include <srdma.h>

int main(void)
{
	uint32_t psn;
	int rc = srdma_psn_generate(&psn);

	if (rc < 0 || psn > SRDMA_PSN_MASK)
		return 1;
	printf("srdma %s psn=ok\n", srdma_version());
	return 0;
}
