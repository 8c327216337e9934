/* Printing what may come from untrusted input (names from a BEP, a cache, a
 * manifest): control characters escaped. Its own file so that fuzz/ can
 * link it with the manifest parser. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

void cli_vprint_safe(FILE *f, const char *fmt, va_list ap)
{
	char buf[8192], out[4 * sizeof(buf) + 8];
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t k = 0;

	if (n < 0)
		return;
	for (const unsigned char *c = (const unsigned char *)buf; *c; c++) {
		bool last_newline = *c == '\n' && c[1] == '\0';
		if ((*c < 0x20 && *c != '\t' && !last_newline) || *c == 0x7f)
			k += (size_t)snprintf(out + k, sizeof(out) - k, "\\x%02x", *c);
		else
			out[k++] = (char)*c;
	}
	if ((size_t)n >= sizeof(buf)) /* cut short: say so, and end the line */
		k += (size_t)snprintf(out + k, sizeof(out) - k, "%s",
				      fmt[strlen(fmt) - 1] == '\n' ? "...\n" : "...");
	/* One stdio call: other threads (the proxy's requests) print too. */
	fwrite(out, 1, k, f);
}

void cli_eprintf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_vprint_safe(stderr, fmt, ap);
	va_end(ap);
}
