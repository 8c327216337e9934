/* Cache backends behind one interface.
 *
 * http: the HTTP cache protocol of bazel-remote and nginx WebDAV
 * ({base}[/{instance}]/{ac|cas}/{hash}), driven by the transfer engine's curl
 * multi handle. The --remote_cache URL is parsed with libcurl's URL API; its
 * user and password go to libcurl as CURLOPT_USERNAME/PASSWORD and never into
 * a URL string we keep, so no message can show them. Without a user in the
 * URL, a credential helper or the netrc file gives the credentials
 * (credentials.c), as Bazel.
 *
 * disk: a directory in Bazel's --disk_cache layout. Reads of whole files go
 * through the engine over file://; streams and uploads use the layout
 * helpers at the end of this file (sharded {ac,cas}/ab/abcd..., flat
 * {ac,cas}/abcd... read too, writes atomic through a temporary file). */
#include "downloader/downloader.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum dl_backend_type { DL_BACKEND_HTTP, DL_BACKEND_DISK, DL_BACKEND_GRPC } dl_backend_type;

/* --remote_http_version. */
typedef enum dl_http_version { DL_HTTP_2, DL_HTTP_2_PRIOR_KNOWLEDGE, DL_HTTP_1_1 } dl_http_version;

/* The cleartext HTTP/2 connection of an old libcurl (dl_backend_h2c). */
enum { H2C_DOWN, H2C_CONNECTING, H2C_UP };

struct dl_backend {
	dl_backend_type type;
	char *base;    /* http: scheme://host[:port][/prefix][/instance], no credentials, no
			  trailing '/'; disk: absolute directory */
	char *user, *password; /* http: decoded, for CURLOPT_USERNAME/PASSWORD; NULL if none */
	/* Every request's header lines; the credential helper's are nodes at its
	 * end, changed in place by dl_creds_refresh (engine thread). */
	struct curl_slist *headers;
	dl_creds *creds;       /* http, grpc: netrc and credential helpers */
	/* grpc: the RequestMetadata line dl_backend_set_invocation made (any
	 * thread), put in place by dl_backend_refresh (engine thread). */
	pthread_mutex_t invocation_mu;
	char *invocation_line;
	char *tls_certificate, *tls_client_certificate, *tls_client_key;
	long timeout_s;
	atomic_ulong tmp_seq; /* disk: temporary file names */
	dl_http_version http_version; /* http */
	/* http, 2-prior-knowledge on http:// with libcurl before 8.0.0: is a
	 * connection of ours up (H2C_*)? See http_version(). */
	bool h2c_leader;
	atomic_int h2c;
	dl_grpc *grpc;        /* grpc: everything of that backend (grpc.c) */
};

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int add_header(dl_backend *b, const char *spec, tf_error *err)
{
	/* Bazel spells it --remote_header=Name=Value. */
	const char *eq = strchr(spec, '=');
	struct curl_slist *n;
	char *line;

	/* A header usually carries a secret (Authorization=Bearer ...): a
	 * malformed one is described, never repeated. */
	if (!eq || eq == spec)
		return tf__errf(err, -EINVAL,
				"a --remote_header is not Name=Value (%s); it is not repeated here as it may hold a "
				"secret",
				eq ? "the name before '=' is empty" : "it has no '='");
	for (const char *p = spec; p < eq; p++)
		if (*p == ':' || *p == '\r' || *p == '\n' || *p == ' ' || (unsigned char)*p < 0x20)
			return tf__errf(err, -EINVAL,
					"a --remote_header name has the character %s at position %d: write "
					"--remote_header=Name=Value (the header is not repeated here as it may hold a "
					"secret)",
					*p == ':' ? "':'" : *p == ' ' ? "' '" : "of a line break or control",
					(int)(p - spec) + 1);
	if (strpbrk(eq + 1, "\r\n"))
		return tf__errf(err, -EINVAL, "--remote_header %.*s: the value contains a line break",
				(int)(eq - spec), spec);
	if (asprintf(&line, "%.*s: %s", (int)(eq - spec), spec, eq + 1) < 0)
		return tf__errf(err, -ENOMEM, "out of memory");
	n = curl_slist_append(b->headers, line);
	free(line);
	if (!n)
		return tf__errf(err, -ENOMEM, "out of memory");
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

/* The scheme of a URL-looking string, for messages that must not repeat the
 * rest (it may hold a password). */
static int scheme_len(const char *s)
{
	const char *p = strstr(s, "://");
	return p && p - s < 16 ? (int)(p - s) : 0;
}

/* Splits an http(s) --remote_cache into a base URL without credentials and
 * the decoded user and password, with libcurl's URL parser. */
static int parse_http(dl_backend *b, const char *rc, const char *inst, tf_error *err)
{
	CURLU *u = curl_url();
	CURLUcode uc;
	char *s = NULL, *path = NULL, *url = NULL;
	size_t len;
	int r = 0;

	if (!u)
		return tf__errf(err, -ENOMEM, "out of memory");
	uc = curl_url_set(u, CURLUPART_URL, rc, CURLU_NON_SUPPORT_SCHEME);
	if (uc != CURLUE_OK) {
		/* Not repeated: a malformed URL may still carry a password. */
		r = tf__errf(err, -EINVAL, "--remote_cache is not a valid %.*s URL: %s", scheme_len(rc), rc,
			     curl_url_strerror(uc));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PORT, &s, 0) == CURLUE_OK) {
		bool zero = !strcmp(s, "0");
		curl_free(s);
		s = NULL;
		if (zero) {
			r = tf__errf(err, -EINVAL, "--remote_cache %.*s://...: port 0 is not a port a cache listens on",
				     scheme_len(rc), rc);
			goto out;
		}
	}
	if (curl_url_get(u, CURLUPART_USER, &b->user, CURLU_URLDECODE) != CURLUE_OK)
		b->user = NULL;
	if (curl_url_get(u, CURLUPART_PASSWORD, &b->password, CURLU_URLDECODE) != CURLUE_OK)
		b->password = NULL;
	curl_url_set(u, CURLUPART_USER, NULL, 0);
	curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
	curl_url_set(u, CURLUPART_OPTIONS, NULL, 0);
	if (curl_url_get(u, CURLUPART_QUERY, &s, 0) == CURLUE_OK ||
	    curl_url_get(u, CURLUPART_FRAGMENT, &s, 0) == CURLUE_OK) {
		curl_free(s);
		r = tf__errf(err, -EINVAL, "--remote_cache: a cache URL takes no query or fragment ('?', '#')");
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
		r = tf__errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	/* The prefix, without trailing slashes, then the instance name. */
	len = strlen(path);
	while (len > 0 && path[len - 1] == '/')
		len--;
	path[len] = '\0';
	if (inst && *inst) {
		char *p2;
		if (asprintf(&p2, "%s/%s", path, inst) < 0) {
			r = tf__errf(err, -ENOMEM, "out of memory");
			goto out;
		}
		curl_free(path);
		path = NULL;
		uc = curl_url_set(u, CURLUPART_PATH, p2, 0);
		free(p2);
	} else {
		uc = curl_url_set(u, CURLUPART_PATH, *path ? path : "/", 0);
	}
	if (uc != CURLUE_OK || curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK) {
		r = tf__errf(err, -EINVAL, "--remote_cache: cannot form the cache URL");
		goto out;
	}
	len = strlen(url);
	while (len > 0 && url[len - 1] == '/')
		len--;
	b->base = strndup(url, len);
	if (!b->base)
		r = tf__errf(err, -ENOMEM, "out of memory");
out:
	curl_free(url);
	curl_free(path);
	curl_url_cleanup(u);
	return r;
}

/* A TLS file libcurl cannot read fails every transfer with a message about
 * TLS; say which file at start instead. */
static int check_tls_files(const tf_remote_options *opts, tf_error *err)
{
	const struct {
		const char *flag, *path;
	} f[] = {
		{ "--tls_certificate", opts->tls_certificate },
		{ "--tls_client_certificate", opts->tls_client_certificate },
		{ "--tls_client_key", opts->tls_client_key },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		struct stat st;
		int fd;
		if (!f[i].path)
			continue;
		fd = open(f[i].path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return tf__errf(err, -errno, "%s=%s: cannot read it: %s", f[i].flag, f[i].path, strerror(errno));
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
			close(fd);
			return tf__errf(err, -EINVAL, "%s=%s: not a PEM file (not a regular file, or empty)", f[i].flag,
					f[i].path);
		}
		close(fd);
	}
	return 0;
}

static int parse_http_version(dl_backend *b, const tf_remote_options *opts, tf_error *err)
{
	const char *v = opts->remote_http_version;
	const char *rc = opts->remote_cache;

	if (!v || !strcmp(v, "2"))
		b->http_version = DL_HTTP_2;
	else if (!strcmp(v, "2-prior-knowledge"))
		b->http_version = DL_HTTP_2_PRIOR_KNOWLEDGE;
	else if (!strcmp(v, "1.1"))
		b->http_version = DL_HTTP_1_1;
	else
		return tf__errf(err, -EINVAL, "--remote_http_version=%s: expected 2, 2-prior-knowledge or 1.1", v);
	if (b->http_version == DL_HTTP_1_1 && (!strncmp(rc, "grpc://", 7) || !strncmp(rc, "grpcs://", 8)))
		return tf__errf(err, -EINVAL,
				"--remote_http_version=1.1 with a gRPC cache: gRPC needs HTTP/2; drop the flag or "
				"use an http(s) cache");
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
	pthread_mutex_init(&b->invocation_mu, NULL);

	r = parse_http_version(b, opts, err);
	if (r < 0)
		goto out;
	if (!strncmp(rc, "http://", 7) || !strncmp(rc, "https://", 8)) {
		b->type = DL_BACKEND_HTTP;
		b->h2c_leader = b->http_version == DL_HTTP_2_PRIOR_KNOWLEDGE && !strncmp(rc, "http://", 7) &&
				curl_version_info(CURLVERSION_NOW)->version_num < 0x080000;
		if (strpbrk(rc, " \r\n\t")) {
			r = tf__errf(err, -EINVAL, "--remote_cache URL contains white space");
			goto out;
		}
		r = check_instance(opts->remote_instance_name, err);
		if (r == 0)
			r = parse_http(b, rc, opts->remote_instance_name, err);
		/* Bazel sends no Expect: 100-continue; neither do we. */
		if (r == 0 && !(b->headers = curl_slist_append(NULL, "Expect:")))
			r = tf__errf(err, -ENOMEM, "out of memory");
		for (size_t i = 0; i < opts->n_remote_headers && r == 0; i++)
			r = add_header(b, opts->remote_headers[i], err);
		if (r < 0)
			goto out;
	} else if (!strncmp(rc, "grpc://", 7) || !strncmp(rc, "grpcs://", 8)) {
		b->type = DL_BACKEND_GRPC;
		b->grpc = dl_grpc_new(opts, err);
		if (!b->grpc) {
			r = err ? err->code : -EINVAL;
			goto out;
		}
		b->base = strdup(dl_grpc_display(b->grpc));
		/* --remote_header as gRPC metadata (libcurl lowercases names for HTTP/2). */
		{
			struct curl_slist *l = NULL;
			r = dl_grpc_headers(&l, err);
			b->headers = l;
		}
		for (size_t i = 0; i < opts->n_remote_headers && r == 0; i++)
			r = add_header(b, opts->remote_headers[i], err);
		if (r < 0)
			goto out;
	} else if (strstr(rc, "://") && strncmp(rc, "file://", 7)) {
		r = tf__errf(err, -EPROTONOSUPPORT,
			     "--remote_cache %.*s://...: unknown scheme; use http://, https://, grpc://, grpcs:// or a directory",
			     scheme_len(rc), rc);
		goto out;
	} else {
		const char *path = !strncmp(rc, "file://", 7) ? rc + 7 : rc;
		char real[PATH_MAX];
		struct stat st;

		b->type = DL_BACKEND_DISK;
		if (!realpath(path, real) || stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
			/* Repeated only when it cannot be a URL with a password. */
			bool quiet = strchr(rc, '@') || strchr(rc, ':');
			r = tf__errf(err, -ENOENT, "--remote_cache %s%s: not an http(s) URL and not an existing directory",
				     quiet ? "" : rc,
				     quiet ? "(not repeated: it has ':' or '@' and may hold a password)" : "");
			goto out;
		}
		if (strpbrk(real, "%?#")) {
			r = tf__errf(err, -EINVAL,
				     "disk cache directory %s has '%%', '?' or '#' in its path; move it", real);
			goto out;
		}
		b->base = strdup(real);
	}
	r = check_tls_files(opts, err);
	if (r < 0)
		goto out;
	b->tls_certificate = dup_or_null(opts->tls_certificate);
	b->tls_client_certificate = dup_or_null(opts->tls_client_certificate);
	b->tls_client_key = dup_or_null(opts->tls_client_key);
	if (!b->base) {
		r = tf__errf(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (b->type != DL_BACKEND_DISK) {
		char why[TF_ERROR_MESSAGE_MAX];
		b->creds = dl_creds_new(opts, b->user != NULL, err);
		if (!b->creds) {
			r = err ? err->code : -EINVAL;
			goto out;
		}
		/* The helper's first answer now: a helper that fails is a
		 * configuration mistake, told once, before any transfer. */
		r = dl_creds_refresh(b->creds, &b->headers, why, sizeof(why));
		if (r < 0) {
			r = tf__errf(err, r, "%s", why);
			goto out;
		}
	}
	if (opts->check_at_start)
		r = dl_backend_probe(b, opts->remote_retries, err);
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
	for (struct curl_slist *n = b->headers; n; n = n->next)
		explicit_bzero(n->data, strlen(n->data));
	curl_slist_free_all(b->headers);
	dl_creds_free(b->creds);
	free(b->invocation_line);
	pthread_mutex_destroy(&b->invocation_mu);
	dl_grpc_free(b->grpc);
	free(b->base);
	curl_free(b->user);
	curl_free(b->password);
	free(b->tls_certificate);
	free(b->tls_client_certificate);
	free(b->tls_client_key);
	free(b);
}

const char *dl_backend_kind(const dl_backend *b)
{
	return b->type == DL_BACKEND_HTTP ? "http" : b->type == DL_BACKEND_GRPC ? "grpc" : "disk";
}

bool dl_backend_is_disk(const dl_backend *b)
{
	return b->type == DL_BACKEND_DISK;
}

const char *dl_backend_display(const dl_backend *b)
{
	return b->base;
}

const char *dl_area_name(tf_area a)
{
	return a == TF_AREA_AC ? "ac" : "cas";
}

int dl_backend_set_invocation(dl_backend *b, const char *id)
{
	char line[1024], *dup;

	if (b->type != DL_BACKEND_GRPC)
		return 0;
	if (dl_grpc_metadata_line(line, sizeof(line), id) < 0)
		return -EMSGSIZE;
	if (!(dup = strdup(line)))
		return -ENOMEM;
	pthread_mutex_lock(&b->invocation_mu);
	free(b->invocation_line);
	b->invocation_line = dup;
	pthread_mutex_unlock(&b->invocation_mu);
	return 0;
}

int dl_backend_refresh(const dl_backend *b, char *display, size_t display_len)
{
	/* The backend is shared, but its header list is only ever changed and
	 * read in the engine thread (see dl_creds_refresh). */
	dl_backend *mb = (dl_backend *)b;
	char *line;

	if (b->type == DL_BACKEND_DISK)
		return 0;
	pthread_mutex_lock(&mb->invocation_mu);
	line = mb->invocation_line;
	mb->invocation_line = NULL;
	pthread_mutex_unlock(&mb->invocation_mu);
	if (line) {
		for (struct curl_slist *l = mb->headers; l; l = l->next)
			if (!strncmp(l->data, DL_GRPC_METADATA_HEADER ":", sizeof(DL_GRPC_METADATA_HEADER))) {
				free(l->data); /* libcurl's lists hold malloc'ed strings */
				l->data = line;
				line = NULL;
				break;
			}
		free(line);
	}
	if (dl_creds_has_helper(b->creds) && dl_creds_refresh(mb->creds, &mb->headers, display, display_len) < 0)
		return -EACCES;
	return 0;
}

dl_grpc *dl_backend_grpc(const dl_backend *b)
{
	return b->grpc;
}

/* The cleartext connection a leader opened is gone (closed by either side,
 * or never made): the next transfer leads again. */
static int h2c_closed(void *user, curl_socket_t fd)
{
	dl_backend *b = user;

	atomic_store(&b->h2c, H2C_DOWN);
	return close(fd);
}

/* --remote_http_version on an http(s) transfer. With HTTP/2 every transfer
 * waits for a connection being opened rather than opening its own
 * (CURLOPT_PIPEWAIT), so they become streams of few connections (the multi
 * handle multiplexes, engine.c).
 *
 * libcurl before 8.0.0 (Debian 12 has 7.88.1) fails a transfer made with
 * prior knowledge that reuses a cleartext HTTP/2 connection ("Error in the
 * HTTP2 framing layer", curl pull request 10643). There one transfer, the
 * leader, opens the connection with prior knowledge; the others ask for
 * plain HTTP/2, which waits for that connection and multiplexes on it. When
 * it closes (h2c_closed: a server's GOAWAY after its keepalive_requests, a
 * failure), the next transfer leads again; a transfer that asked for plain
 * HTTP/2 and found no connection fails with CURLE_UNSUPPORTED_PROTOCOL (the
 * server answered its HTTP/1.1 Upgrade request in HTTP/2) and is asked again
 * at once (dl_backend_h2c_note). */
static void http_version(const dl_backend *b, CURL *h)
{
	dl_backend *mb = (dl_backend *)b; /* only the atomic h2c changes */
	int down = H2C_DOWN;

	switch (b->http_version) {
	case DL_HTTP_1_1:
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
		return;
	case DL_HTTP_2:
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		break;
	case DL_HTTP_2_PRIOR_KNOWLEDGE:
		if (!b->h2c_leader) {
			/* Over TLS ALPN says h2 anyway. */
			curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
		} else if (atomic_compare_exchange_strong(&mb->h2c, &down, H2C_CONNECTING)) {
			curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
			curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
			curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, h2c_closed);
			curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, mb);
		} else {
			curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
		}
		break;
	}
	curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
}

bool dl_backend_h2c_note(const dl_backend *b, CURLcode rc)
{
	dl_backend *mb = (dl_backend *)b;
	int connecting = H2C_CONNECTING, up = H2C_UP;

	if (b->type != DL_BACKEND_HTTP || !b->h2c_leader)
		return false;
	switch (rc) {
	case CURLE_OK:
	case CURLE_HTTP_RETURNED_ERROR: /* an answer: the connection works */
		atomic_compare_exchange_strong(&mb->h2c, &connecting, H2C_UP);
		return false;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_WEIRD_SERVER_REPLY:
		/* A follower that found no connection. While a new leader is
		 * connecting, it was the old one's: that leader stays. */
		atomic_compare_exchange_strong(&mb->h2c, &up, H2C_DOWN);
		return true;
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
		/* A broken connection, or none made (a leader that had no socket
		 * to close): the next transfer leads. */
		atomic_store(&mb->h2c, H2C_DOWN);
		return false;
	default:
		return false;
	}
}

bool dl_backend_reusable(const dl_backend *b)
{
	return b->type != DL_BACKEND_GRPC && !(b->http_version == DL_HTTP_2_PRIOR_KNOWLEDGE && b->h2c_leader);
}

int dl_backend_prepare_again(const dl_backend *b, CURL *h, tf_area area, const char *hash, char *display,
			     size_t display_len)
{
	char url[PATH_MAX + 256];

	if (dl_backend_refresh(b, display, display_len) < 0)
		return -EACCES;
	if (b->type == DL_BACKEND_HTTP) {
		snprintf(url, sizeof(url), "%s/%s/%s", b->base, dl_area_name(area), hash);
		snprintf(display, display_len, "%s", url);
	} else {
		char path[PATH_MAX];

		dl_disk_path(b, area, hash, path, sizeof(path));
		snprintf(display, display_len, "%s", path);
		snprintf(url, sizeof(url), "file://%s", path);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	return 0;
}

int dl_backend_prepare(const dl_backend *b, CURL *h, dl_op op, tf_area area, const char *hash, int64_t size,
		       int64_t offset, char *display, size_t display_len)
{
	char url[PATH_MAX + 256];

	if (dl_backend_refresh(b, display, display_len) < 0)
		return -EACCES;
	if (b->type == DL_BACKEND_GRPC) {
		/* A CAS blob's resource name holds its size. */
		if (op != DL_OP_GET || (area == TF_AREA_CAS && size < 0)) {
			snprintf(display, display_len, "%s/%s/%s", b->base, dl_area_name(area), hash);
			return -EOPNOTSUPP;
		}
		return dl_grpc_prepare(b, h, area, hash, size, offset, display, display_len);
	}
	if (op == DL_OP_FIND)
		return -EOPNOTSUPP; /* gRPC only */
	if (b->type == DL_BACKEND_HTTP) {
		snprintf(url, sizeof(url), "%s/%s/%s", b->base, dl_area_name(area), hash);
		snprintf(display, display_len, "%s", url);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
		dl_backend_common(b, h);
		http_version(b, h);
		curl_easy_setopt(h, CURLOPT_FAILONERROR, op == DL_OP_GET ? 1L : 0L);
		if (op == DL_OP_HEAD)
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		else if (op == DL_OP_PUT)
			curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	} else {
		/* Only whole-file reads go through libcurl for a disk cache. */
		char path[PATH_MAX];

		if (op != DL_OP_GET)
			return -EOPNOTSUPP;
		/* Not there: curl's read of the sharded path says so. */
		dl_disk_path(b, area, hash, path, sizeof(path));
		snprintf(display, display_len, "%s", path);
		snprintf(url, sizeof(url), "file://%s", path);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "file");
		/* The same clock as dl_backend_common's: silence is watched by
		 * dl_backend_watch_silence. */
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 86400L);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	return 0;
}

void dl_backend_common(const dl_backend *b, CURL *h)
{
	const char *user, *password;

	curl_easy_setopt(h, CURLOPT_HTTPHEADER, b->headers);
	/* Basic auth: the URL's user, else the netrc entry of the host. */
	if (b->user) {
		curl_easy_setopt(h, CURLOPT_USERNAME, b->user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, b->password ? b->password : "");
	} else if (dl_creds_netrc(b->creds, &user, &password)) {
		curl_easy_setopt(h, CURLOPT_USERNAME, user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, password);
	}
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, b->timeout_s);
	/* --remote_timeout bounds silence, not the whole transfer: a 1 GiB blob
	 * may take longer than the timeout as long as bytes keep coming
	 * (dl_backend_watch_silence). curl's speed check stays on only as a
	 * clock: below 1 byte/s it wakes the transfer every second, so the
	 * silence check runs; its own limit is a day. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 86400L);
	if (b->tls_certificate)
		curl_easy_setopt(h, CURLOPT_CAINFO, b->tls_certificate);
	if (b->tls_client_certificate)
		curl_easy_setopt(h, CURLOPT_SSLCERT, b->tls_client_certificate);
	if (b->tls_client_key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, b->tls_client_key);
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	dl_silence *w = user;
	uint64_t now = tf__now_ns();

	if (dlnow != w->last_dl || ulnow != w->last_ul || (w->paused && *w->paused) || !w->last_ns) {
		w->last_dl = dlnow;
		w->last_ul = ulnow;
		w->last_ns = now;
		return 0;
	}
	if (now - w->last_ns >= (uint64_t)w->timeout_s * 1000000000ull) {
		w->fired = true;
		return 1; /* curl ends the transfer: CURLE_ABORTED_BY_CALLBACK */
	}
	return 0;
}

void dl_backend_watch_silence(const dl_backend *b, CURL *h, dl_silence *w, const bool *paused)
{
	*w = (dl_silence){ .last_ns = tf__now_ns(), .timeout_s = b->timeout_s, .paused = paused };
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, w);
}

long dl_backend_timeout_s(const dl_backend *b)
{
	return b->timeout_s;
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
		if (status >= 200 && status < 300 && status != 204)
			return DL_OUTCOME_BODY;
		if (status == 204 || status == 404) {
			snprintf(why, why_len, status == 204 ? "HTTP 204 (a miss, as nginx WebDAV answers)"
							     : "HTTP 404");
			return DL_OUTCOME_MISS;
		}
		if (status < 400) {
			snprintf(why, why_len, "unexpected HTTP %ld", status);
			return DL_OUTCOME_FATAL;
		}
		rc = CURLE_HTTP_RETURNED_ERROR; /* a stream reads error statuses itself */
	}
	if (rc == CURLE_HTTP_RETURNED_ERROR) {
		if (status == 404) {
			snprintf(why, why_len, "HTTP 404");
			return DL_OUTCOME_MISS;
		}
		if (status == 401 || status == 403) {
			snprintf(why, why_len,
				 "HTTP %ld: the cache refused the credentials; check --remote_header, --credential_helper, the netrc file, the user:password in --remote_cache, or the TLS client certificate",
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
		return DL_OUTCOME_TIMEOUT;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		snprintf(why, why_len, TF_CACHE_DOWN " (%s)", detail);
		return DL_OUTCOME_TRANSIENT;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_WEIRD_SERVER_REPLY:
		snprintf(why, why_len, "%s", detail);
		/* The cleartext HTTP/2 connection went away under a transfer that
		 * waited for it (http_version). */
		return b->h2c_leader ? DL_OUTCOME_TRANSIENT : DL_OUTCOME_FATAL;
	case CURLE_HTTP2:
	case CURLE_GOT_NOTHING:
		/* What an HTTP/1.1 server makes of HTTP/2's first bytes. */
		snprintf(why, why_len, "%s%s", detail,
			 b->http_version == DL_HTTP_2_PRIOR_KNOWLEDGE && !strncmp(b->base, "http://", 7)
				 ? " (--remote_http_version=2-prior-knowledge needs a server that speaks HTTP/2 on "
				   "cleartext connections)"
				 : "");
		return DL_OUTCOME_TRANSIENT;
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		snprintf(why, why_len, "%s", detail);
		return DL_OUTCOME_TRANSIENT;
	default:
		snprintf(why, why_len, "%s", detail);
		return DL_OUTCOME_FATAL;
	}
}

/* ---- asking once at start ------------------------------------------------------------ */

static size_t probe_discard(char *p, size_t size, size_t n, void *user)
{
	(void)p;
	(void)user;
	return size * n;
}

/* A key no cache stores (the SHA-256 of nothing is never asked either). */
#define PROBE_KEY "0000000000000000000000000000000000000000000000000000000000000000"

int dl_backend_probe(dl_backend *b, int retries, tf_error *err)
{
	char display[PATH_MAX + 256], why[TF_ERROR_MESSAGE_MAX], errbuf[CURL_ERROR_SIZE];
	unsigned delay_ms = 100;
	int attempt;

	if (b->type == DL_BACKEND_DISK)
		return 0; /* dl_backend_new found the directory */
	for (attempt = 1;; attempt++) {
		CURL *h = curl_easy_init();
		dl_outcome o;
		CURLcode rc;
		long status = 0;
		int r;

		if (!h)
			return tf__errf(err, -ENOMEM, "out of memory");
		errbuf[0] = '\0';
		if (b->type == DL_BACKEND_HTTP) {
			r = dl_backend_prepare(b, h, DL_OP_HEAD, TF_AREA_CAS, PROBE_KEY, -1, 0, display, sizeof(display));
		} else {
			/* A connection (TLS included) is enough here: GetCapabilities
			 * follows and tells what the server thinks of the call. */
			r = dl_backend_prepare(b, h, DL_OP_GET, TF_AREA_AC, PROBE_KEY, -1, 0, display, sizeof(display));
			curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
		}
		if (r < 0) {
			curl_easy_cleanup(h);
			return tf__errf(err, r, "%s", r == -EACCES ? display : "cannot make the first request");
		}
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, probe_discard);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_TIMEOUT, b->timeout_s);
		rc = curl_easy_perform(h);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_cleanup(h);
		/* Its connection was its own (closed with the handle): the engine's
		 * first transfer leads (http_version). */
		atomic_store(&b->h2c, H2C_DOWN);
		if (b->type == DL_BACKEND_GRPC && rc == CURLE_OK)
			return 0;
		o = dl_backend_classify(b, rc, status, errbuf, why, sizeof(why));
		/* Reachable: whatever it thinks of this key. A 5xx is this request's
		 * (transfers retry theirs); only a refusal of the credentials is
		 * about every request. */
		if (rc == CURLE_OK && status != 401 && status != 403)
			return 0;
		if ((o == DL_OUTCOME_TRANSIENT || o == DL_OUTCOME_TIMEOUT) && attempt <= retries) {
			nanosleep(&(struct timespec){ .tv_sec = delay_ms / 1000, .tv_nsec = (long)(delay_ms % 1000) * 1000000 },
				  NULL);
			delay_ms = delay_ms * 2 > 5000 ? 5000 : delay_ms * 2;
			continue;
		}
		if (status == 401 || status == 403)
			return tf__errf(err, -EACCES, "the cache %s refused the credentials (HTTP %ld) before any transfer; "
						   "check --remote_header, --credential_helper, the netrc file, the "
						   "user:password in --remote_cache, or the TLS client certificate",
					b->base, status);
		return tf__errf(err, -EHOSTUNREACH, "cannot use the cache %s: %s (%d attempt%s, --remote_retries=%d); %s",
				b->base, why, attempt, attempt == 1 ? "" : "s", retries,
				rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
						rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CONNECT_ERROR
					? "check --tls_certificate (the CA that signed the cache's certificate) and the "
					  "TLS client files"
					: "check --remote_cache and that the cache is running");
	}
}

/* ---- the disk layout --------------------------------------------------------------- */

int dl_disk_path(const dl_backend *b, tf_area area, const char *hash, char *out, size_t n)
{
	struct stat st;
	char flat[PATH_MAX + 256];

	/* Bazel 4.2+ shards its disk cache ({ac,cas}/ab/abcd...); a plain HTTP
	 * cache root copied to disk is flat ({ac,cas}/abcd...). */
	snprintf(out, n, "%s/%s/%.2s/%s", b->base, dl_area_name(area), hash, hash);
	if (stat(out, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	snprintf(flat, sizeof(flat), "%s/%s/%s", b->base, dl_area_name(area), hash);
	if (stat(flat, &st) == 0) {
		snprintf(out, n, "%s", flat);
		return 0;
	}
	return -errno;
}

int dl_disk_open(const dl_backend *b, tf_area area, const char *hash, int64_t *size)
{
	char path[PATH_MAX + 256];
	struct stat st;
	int fd, r = dl_disk_path(b, area, hash, path, sizeof(path));

	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EIO;
	}
	*size = (int64_t)st.st_size;
	return fd;
}

int dl_mkdirs(const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return mkdir(buf, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

int dl_disk_tmp(dl_backend *b, tf_area area, const char *hash, char *tmp, size_t n)
{
	char dir[PATH_MAX + 256];
	int fd, r;

	snprintf(dir, sizeof(dir), "%s/%s/%.2s", b->base, dl_area_name(area), hash);
	if ((r = dl_mkdirs(dir)) < 0)
		return r;
	snprintf(tmp, n, "%s/" DL_TMP_PREFIX "%ld.d%lu", dir, (long)getpid(),
		 (unsigned long)atomic_fetch_add(&b->tmp_seq, 1));
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	return fd < 0 ? -errno : fd;
}

int dl_disk_commit(const dl_backend *b, tf_area area, const char *hash, const char *tmp)
{
	char final[PATH_MAX + 256];

	snprintf(final, sizeof(final), "%s/%s/%.2s/%s", b->base, dl_area_name(area), hash, hash);
	if (rename(tmp, final) < 0) {
		int e = -errno;
		unlink(tmp);
		return e;
	}
	return 0;
}
