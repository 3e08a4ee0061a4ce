#include "srdma.h"

const char *srdma_version(void)
{
	return SRDMA_VERSION_STRING;
}
