/* Printing what may come from untrusted input (names from a BEP, a cache, a
 * manifest): control characters escaped. Its own file so that fuzz/ can
 * link it with the manifest parser. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

void cli_vprint_safe(FILE *f, const char *fmt, va_list ap)
{
	char buf[16384];
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);

	if (n < 0)
		return;
	for (const unsigned char *c = (const unsigned char *)buf; *c; c++) {
		bool last_newline = *c == '\n' && c[1] == '\0';
		if ((*c < 0x20 && *c != '\t' && !last_newline) || *c == 0x7f)
			fprintf(f, "\\x%02x", *c);
		else
			fputc(*c, f);
	}
	if ((size_t)n >= sizeof(buf)) /* cut short: say so, and end the line */
		fputs(buf[sizeof(buf) - 2] == '\n' || fmt[strlen(fmt) - 1] == '\n' ? "...\n" : "...", f);
}

void cli_eprintf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_vprint_safe(stderr, fmt, ap);
	va_end(ap);
}
