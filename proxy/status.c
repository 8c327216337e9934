/* GET /status (JSON) and GET /metrics (Prometheus text exposition format
 * 0.0.4) on the proxy's HTTP listener: what an operator or a scraper asks a
 * long-running proxy. Wire-neutral: the front end sends the page. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

#define PAGE_MAX (64u * 1024)

/* One counter: its name in /status, in /metrics (without topfetch_proxy_ and
 * _total), and its HELP line. In px_counters' field order. */
static const struct {
	const char *json, *metric, *help;
} counters[] = {
	{ "requests", "requests", "Cache requests received (GET, HEAD, PUT on /ac/ and /cas/)." },
	{ "ac_hits", "ac_hits", "Action cache lookups answered with an ActionResult." },
	{ "ac_misses", "ac_misses", "Action cache lookups answered as a miss." },
	{ "ac_answered_lost", "ac_answered_lost", "Lookups answered as a miss because an output of the action was lost." },
	{ "ac_failed_validation", "ac_failed_validation",
	  "Action cache hits answered as a miss because a blob they name is gone from the cache." },
	{ "ac_uploads", "ac_uploads", "ActionResults uploaded." },
	{ "cas_uploads", "cas_uploads", "CAS blobs uploaded." },
	{ "refused", "refused", "Requests refused (bad path, method or bytes)." },
	{ "upstream_errors", "upstream_errors", "Requests the upstream cache failed." },
	{ "bytes_to_bazel", "sent_bytes", "Body bytes sent to the build tool." },
	{ "bytes_from_bazel", "received_bytes", "Body bytes received from the build tool." },
	{ "record_errors", "record_errors", "ActionResults that could not be recorded." },
};

static void values(const px_proxy *p, uint64_t v[12])
{
	px_counters c;

	px_get_counters(p, &c);
	uint64_t all[] = { c.requests, c.ac_hits,    c.ac_misses,       c.ac_lost,   c.ac_invalid, c.ac_puts,
			   c.cas_puts, c.refused,    c.upstream_errors, c.bytes_out, c.bytes_in,   c.record_errors };
	_Static_assert(sizeof(all) / sizeof(all[0]) == sizeof(counters) / sizeof(counters[0]), "one row per counter");
	memcpy(v, all, sizeof(all));
}

static int addf(tf__buf *b, const char *fmt, ...) TF__PRINTF(2, 3);

static int addf(tf__buf *b, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -EOVERFLOW;
	return tf__buf_append(b, line, (size_t)n);
}

static int status_json(const px_proxy *p, tf__buf *b)
{
	uint64_t v[12];
	int r;

	values(p, v);
	r = addf(b, "{\"version\": ");
	if (!r)
		r = tf__buf_json_string(b, tf_version());
	if (!r)
		r = addf(b, ", \"commit\": ");
	if (!r)
		r = tf__buf_json_string(b, tf_version_commit());
	if (!r)
		r = addf(b, ", \"upstream\": ");
	if (!r)
		r = tf__buf_json_string(b, px_upstream(p));
	if (!r)
		r = addf(b, ", \"uptime_seconds\": %.3f, \"builds_served\": %llu, \"counters\": {", px_uptime_s(p),
			 (unsigned long long)px_builds_served(p));
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]) && !r; i++)
		r = addf(b, "%s\"%s\": %llu", i ? ", " : "", counters[i].json, (unsigned long long)v[i]);
	return r ? r : addf(b, "}}\n");
}

static int metrics_text(const px_proxy *p, tf__buf *b)
{
	uint64_t v[12];
	int r;

	values(p, v);
	r = addf(b,
		 "# HELP topfetch_build_info The topfetch version serving.\n"
		 "# TYPE topfetch_build_info gauge\n"
		 "topfetch_build_info{version=\"%s\",commit=\"%s\"} 1\n"
		 "# HELP topfetch_proxy_uptime_seconds Seconds since the proxy started.\n"
		 "# TYPE topfetch_proxy_uptime_seconds gauge\n"
		 "topfetch_proxy_uptime_seconds %.3f\n"
		 "# HELP topfetch_proxy_builds_served_total Builds of the followed BEP that ended.\n"
		 "# TYPE topfetch_proxy_builds_served_total counter\n"
		 "topfetch_proxy_builds_served_total %llu\n",
		 tf_version(), tf_version_commit(), px_uptime_s(p), (unsigned long long)px_builds_served(p));
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]) && !r; i++)
		r = addf(b,
			 "# HELP topfetch_proxy_%s_total %s\n# TYPE topfetch_proxy_%s_total counter\n"
			 "topfetch_proxy_%s_total %llu\n",
			 counters[i].metric, counters[i].help, counters[i].metric, counters[i].metric,
			 (unsigned long long)v[i]);
	return r;
}

int px_status_page(const px_proxy *p, const char *url, px_page *page)
{
	tf__buf b;
	int r;

	memset(page, 0, sizeof(*page));
	if (strcmp(url, "/status") && strcmp(url, "/metrics"))
		return -ENOENT;
	tf__buf_init(&b, PAGE_MAX);
	if (!strcmp(url, "/status")) {
		page->content_type = "application/json";
		r = status_json(p, &b);
	} else {
		page->content_type = "text/plain; version=0.0.4; charset=utf-8";
		r = metrics_text(p, &b);
	}
	if (r < 0) {
		tf__buf_fini(&b);
		return r;
	}
	page->body = (char *)b.data;
	page->len = b.len;
	return 0;
}
