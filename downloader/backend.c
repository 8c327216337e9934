/* Cache backends behind one interface.
 *
 * Both backends are driven by the same libcurl transfer engine: the HTTP cache
 * (bazel-remote, nginx WebDAV: GET {base}[/{instance}]/{ac|cas}/{hash}) over
 * http(s), and Bazel's --disk_cache directory over file://. One mechanism, so
 * verification, atomic placement, retries and results are the same for both. */
#include "downloader/downloader.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum dl_backend_type { DL_BACKEND_HTTP, DL_BACKEND_DISK } dl_backend_type;

struct dl_backend {
	dl_backend_type type;
	char *base;    /* http: URL with credentials and instance prefix, no trailing '/';
			  disk: absolute directory */
	char *display; /* base without credentials */
	struct curl_slist *headers;
	char *tls_certificate, *tls_client_certificate, *tls_client_key;
	long timeout_s;
};

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Removes "user:password@" from an http(s) URL, for messages. */
static char *strip_credentials(const char *url)
{
	const char *scheme_end = strstr(url, "://");
	const char *host = scheme_end ? scheme_end + 3 : url;
	const char *slash = strchr(host, '/');
	const char *at = strchr(host, '@');
	char *out;

	if (!at || (slash && at > slash))
		return strdup(url);
	out = malloc(strlen(url) + 1);
	if (!out)
		return NULL;
	memcpy(out, url, (size_t)(host - url));
	strcpy(out + (host - url), at + 1);
	return out;
}

static int add_header(dl_backend *b, const char *spec, tf_error *err)
{
	/* Bazel spells it --remote_header=Name=Value. */
	const char *eq = strchr(spec, '=');
	struct curl_slist *n;
	char *line;

	if (!eq || eq == spec)
		return tf__errf(err, -EINVAL,
				"--remote_header '%.*s...' is not Name=Value", (int)(eq ? 0 : 20), spec);
	for (const char *p = spec; p < eq; p++)
		if (*p == ':' || *p == '\r' || *p == '\n' || *p == ' ')
			return tf__errf(err, -EINVAL, "--remote_header name '%.*s' is not a valid header name",
					(int)(eq - spec), spec);
	if (strpbrk(eq + 1, "\r\n"))
		return tf__errf(err, -EINVAL, "--remote_header %.*s: the value contains a line break",
				(int)(eq - spec), spec);
	if (asprintf(&line, "%.*s: %s", (int)(eq - spec), spec, eq + 1) < 0)
		return -ENOMEM;
	n = curl_slist_append(b->headers, line);
	free(line);
	if (!n)
		return -ENOMEM;
	b->headers = n;
	return 0;
}

static int check_instance(const char *inst, tf_error *err)
{
	if (!inst || !*inst)
		return 0;
	if (tf__path_check(inst, "--remote_instance_name", err) < 0)
		return err ? err->code : -EINVAL;
	for (const char *p = inst; *p; p++)
		if (*p == '?' || *p == '#' || *p == '%' || *p == ' ' || (unsigned char)*p < 0x20)
			return tf__errf(err, -EINVAL,
					"--remote_instance_name '%s' has a character that cannot go in a URL path",
					inst);
	return 0;
}

dl_backend *dl_backend_new(const tf_remote_options *opts, tf_error *err)
{
	const char *rc = opts->remote_cache;
	dl_backend *b;
	int r = 0;

	if (!rc || !*rc) {
		tf__errf(err, -EINVAL, "no cache given: pass --remote_cache=URL or a --disk_cache directory");
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		tf__errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	b->timeout_s = opts->remote_timeout_s > 0 ? opts->remote_timeout_s : 60;

	if (!strncmp(rc, "http://", 7) || !strncmp(rc, "https://", 8)) {
		const char *inst = opts->remote_instance_name;
		size_t len = strlen(rc);

		b->type = DL_BACKEND_HTTP;
		while (len > 0 && rc[len - 1] == '/')
			len--;
		r = check_instance(inst, err);
		if (r < 0)
			goto out;
		if (asprintf(&b->base, "%.*s%s%s", (int)len, rc, inst && *inst ? "/" : "",
			     inst ? inst : "") < 0) {
			b->base = NULL;
			r = tf__errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		if (strpbrk(b->base, " \r\n\t")) {
			r = tf__errf(err, -EINVAL, "--remote_cache URL contains white space");
			goto out;
		}
		b->display = strip_credentials(b->base);
		for (size_t i = 0; i < opts->n_remote_headers && r == 0; i++)
			r = add_header(b, opts->remote_headers[i], err);
		if (r < 0)
			goto out;
	} else if (!strncmp(rc, "grpc://", 7) || !strncmp(rc, "grpcs://", 8)) {
		r = tf__errf(err, -EPROTONOSUPPORT,
			     "--remote_cache %s: gRPC caches are not supported yet; use the cache's HTTP endpoint (bazel-remote serves both) or a --disk_cache directory",
			     rc);
		goto out;
	} else if (strstr(rc, "://") && strncmp(rc, "file://", 7)) {
		r = tf__errf(err, -EPROTONOSUPPORT,
			     "--remote_cache %s: unknown scheme; use http://, https:// or a directory", rc);
		goto out;
	} else {
		const char *path = !strncmp(rc, "file://", 7) ? rc + 7 : rc;
		char real[PATH_MAX];
		struct stat st;

		b->type = DL_BACKEND_DISK;
		if (!realpath(path, real) || stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
			r = tf__errf(err, -ENOENT,
				     "--remote_cache %s: not an http(s) URL and not an existing directory", rc);
			goto out;
		}
		if (strpbrk(real, "%?#")) {
			r = tf__errf(err, -EINVAL,
				     "disk cache directory %s has '%%', '?' or '#' in its path; move it", real);
			goto out;
		}
		b->base = strdup(real);
		b->display = strdup(real);
	}
	b->tls_certificate = dup_or_null(opts->tls_certificate);
	b->tls_client_certificate = dup_or_null(opts->tls_client_certificate);
	b->tls_client_key = dup_or_null(opts->tls_client_key);
	if (!b->base || !b->display)
		r = tf__errf(err, -ENOMEM, "out of memory");
out:
	if (r < 0) {
		dl_backend_free(b);
		return NULL;
	}
	return b;
}

void dl_backend_free(dl_backend *b)
{
	if (!b)
		return;
	curl_slist_free_all(b->headers);
	free(b->base);
	free(b->display);
	free(b->tls_certificate);
	free(b->tls_client_certificate);
	free(b->tls_client_key);
	free(b);
}

const char *dl_backend_kind(const dl_backend *b)
{
	return b->type == DL_BACKEND_HTTP ? "http" : "disk";
}

static const char *area_name(dl_area a)
{
	return a == DL_AREA_AC ? "ac" : "cas";
}

int dl_backend_prepare_get(const dl_backend *b, CURL *h, dl_area area, const char *hash,
			   char *display, size_t display_len)
{
	char url[PATH_MAX + 256];

	if (b->type == DL_BACKEND_HTTP) {
		snprintf(url, sizeof(url), "%s/%s/%s", b->base, area_name(area), hash);
		snprintf(display, display_len, "%s/%s/%s", b->display, area_name(area), hash);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, b->headers);
		/* HTTP/2 when the server offers it over TLS; plain HTTP/1.1 otherwise
		 * (nginx and bazel-remote do not upgrade cleartext connections). */
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
		curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, b->timeout_s);
		if (b->tls_certificate)
			curl_easy_setopt(h, CURLOPT_CAINFO, b->tls_certificate);
		if (b->tls_client_certificate)
			curl_easy_setopt(h, CURLOPT_SSLCERT, b->tls_client_certificate);
		if (b->tls_client_key)
			curl_easy_setopt(h, CURLOPT_SSLKEY, b->tls_client_key);
	} else {
		/* Bazel 4.2+ shards its disk cache ({ac,cas}/ab/abcd...); a plain
		 * HTTP cache root copied to disk is flat ({ac,cas}/abcd...). */
		struct stat st;

		snprintf(url, sizeof(url), "%s/%s/%.2s/%s", b->base, area_name(area), hash, hash);
		if (stat(url, &st) < 0) {
			char flat[PATH_MAX + 256];
			snprintf(flat, sizeof(flat), "%s/%s/%s", b->base, area_name(area), hash);
			if (stat(flat, &st) == 0)
				memcpy(url, flat, sizeof(url));
		}
		snprintf(display, display_len, "%s", url);
		memmove(url + 7, url, strlen(url) + 1);
		memcpy(url, "file://", 7);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "file");
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	/* --remote_timeout bounds silence, not the whole transfer: a 1 GiB blob
	 * may take longer than the timeout as long as bytes keep coming. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, b->timeout_s);
	return 0;
}

dl_outcome dl_backend_classify(const dl_backend *b, CURLcode rc, long status, const char *errbuf,
			       char *why, size_t why_len)
{
	const char *detail = errbuf && *errbuf ? errbuf : curl_easy_strerror(rc);

	if (b->type == DL_BACKEND_DISK) {
		if (rc == CURLE_OK)
			return DL_OUTCOME_BODY;
		if (rc == CURLE_FILE_COULDNT_READ_FILE) {
			snprintf(why, why_len, "not in the disk cache");
			return DL_OUTCOME_MISS;
		}
		snprintf(why, why_len, "%s", detail);
		return DL_OUTCOME_FATAL;
	}
	if (rc == CURLE_OK) {
		if (status == 200)
			return DL_OUTCOME_BODY;
		if (status == 204) {
			snprintf(why, why_len, "HTTP 204 (a miss, as nginx WebDAV answers)");
			return DL_OUTCOME_MISS;
		}
		snprintf(why, why_len, "unexpected HTTP %ld", status);
		return DL_OUTCOME_FATAL;
	}
	if (rc == CURLE_HTTP_RETURNED_ERROR) {
		if (status == 404) {
			snprintf(why, why_len, "HTTP 404");
			return DL_OUTCOME_MISS;
		}
		if (status == 401 || status == 403) {
			snprintf(why, why_len,
				 "HTTP %ld: the cache refused the credentials; check --remote_header, the user:password in --remote_cache, or the TLS client certificate",
				 status);
			return DL_OUTCOME_FATAL;
		}
		snprintf(why, why_len, "HTTP %ld", status);
		if (status >= 500 || status == 408 || status == 429)
			return DL_OUTCOME_TRANSIENT;
		return DL_OUTCOME_FATAL;
	}
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		snprintf(why, why_len, "timed out: no data for --remote_timeout=%lds (%s)", b->timeout_s,
			 detail);
		return DL_OUTCOME_TRANSIENT;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		snprintf(why, why_len, "%s", detail);
		return DL_OUTCOME_TRANSIENT;
	default:
		snprintf(why, why_len, "%s", detail);
		return DL_OUTCOME_FATAL;
	}
}
