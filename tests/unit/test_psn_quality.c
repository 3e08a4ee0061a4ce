/*
 * PSN quality: 1,000,000 PSNs from the real generator cover the 24-bit space
 * evenly. Chi-square on each of the three bytes (256 bins, 255 degrees of
 * freedom) must stay under 377, the critical value at p = 1e-6 (Wilson-
 * Hilferty), and every bit must be set in 50% +- 0.25% of draws (5 sigma).
 * A fair generator fails one of the 27 checks with probability ~3e-5.
 *
 * Controls: the same checks must reject generators with known flaws (a forced
 * low bit, as in earlier designs; a high byte that never reaches 128), so a
 * pass means the checks could have failed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <cmocka.h>

#include "srdma.h"
#include "srdma_internal.h"

#define DRAWS 1000000
#define CHI2_LIMIT 377.0
#define BIT_TOLERANCE 0.0025

struct verdict {
	double chi2[3];
	double worst_bit;	/* largest |share of ones - 0.5| */
};

static void measure(int (*draw)(uint32_t *), struct verdict *v)
{
	static unsigned long bytes[3][256];
	unsigned long ones[24] = { 0 };

	memset(bytes, 0, sizeof(bytes));
	for (long i = 0; i < DRAWS; i++) {
		uint32_t psn;

		assert_int_equal(draw(&psn), 0);
		assert_true(psn <= SRDMA_PSN_MASK);
		for (int b = 0; b < 3; b++)
			bytes[b][(psn >> (8 * b)) & 0xff]++;
		for (int k = 0; k < 24; k++)
			ones[k] += (psn >> k) & 1;
	}
	for (int b = 0; b < 3; b++) {
		double expect = DRAWS / 256.0, chi2 = 0;

		for (int x = 0; x < 256; x++) {
			double d = (double)bytes[b][x] - expect;

			chi2 += d * d / expect;
		}
		v->chi2[b] = chi2;
	}
	v->worst_bit = 0;
	for (int k = 0; k < 24; k++) {
		double off = (double)ones[k] / DRAWS - 0.5;

		if (off < 0)
			off = -off;
		if (off > v->worst_bit)
			v->worst_bit = off;
	}
}

static bool passes(const struct verdict *v)
{
	return v->chi2[0] < CHI2_LIMIT && v->chi2[1] < CHI2_LIMIT &&
	       v->chi2[2] < CHI2_LIMIT && v->worst_bit < BIT_TOLERANCE;
}

static void print(const char *what, const struct verdict *v)
{
	print_message("%s: chi2 low/mid/high byte %.1f/%.1f/%.1f (limit %.0f), worst bit %.5f off 0.5 (limit %.4f)\n",
		      what, v->chi2[0], v->chi2[1], v->chi2[2], CHI2_LIMIT, v->worst_bit,
		      BIT_TOLERANCE);
}

static ssize_t low_bit_forced(void *buf, size_t len, unsigned int flags)
{
	ssize_t n = getrandom(buf, len, flags);

	if (n == (ssize_t)len && len == 3)
		((unsigned char *)buf)[2] |= 1;	/* PSN bit 0 */
	return n;
}

static ssize_t high_byte_halved(void *buf, size_t len, unsigned int flags)
{
	ssize_t n = getrandom(buf, len, flags);

	if (n == (ssize_t)len && len == 3)
		((unsigned char *)buf)[0] &= 0x7f;	/* PSN bits 16..23 */
	return n;
}

static int draw_low_bit_forced(uint32_t *psn)
{
	return srdma_psn_from_source(psn, low_bit_forced);
}

static int draw_high_byte_halved(uint32_t *psn)
{
	return srdma_psn_from_source(psn, high_byte_halved);
}

static void generator_is_uniform(void **state)
{
	struct verdict v;

	(void)state;
	measure(srdma_psn_generate, &v);
	print("srdma_psn_generate", &v);
	assert_true(passes(&v));
}

static void checks_reject_flawed_generators(void **state)
{
	struct verdict v;

	(void)state;
	measure(draw_low_bit_forced, &v);
	print("control, low bit forced", &v);
	assert_false(passes(&v));
	measure(draw_high_byte_halved, &v);
	print("control, high byte < 128", &v);
	assert_false(passes(&v));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(generator_is_uniform),
		cmocka_unit_test(checks_reject_flawed_generators),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
