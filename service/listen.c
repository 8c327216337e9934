/* Who may talk to the service.
 *
 * Whoever can send requests decides what lands in --output_dir and what the
 * service fetches, so the REP socket is private by default: an ipc:// socket
 * lives in a folder only its owner can enter (created 0700 when missing; an
 * existing folder that others may read, write or enter is refused, as is a
 * symlink or a folder of another user), and tcp:// binds to loopback
 * addresses only unless the caller explicitly allows more. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "service/service.h"

static int check_tcp(const char *url, const char *what, bool allow, tf_error *err)
{
	const char *hostport = url + 6, *colon = strrchr(hostport, ':');
	char host[256];
	size_t n;
	struct in_addr a4;
	struct in6_addr a6;

	if (!colon || colon == hostport || !colon[1])
		return tf__errf(err, -EINVAL, "%s %s: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555)", what, url);
	n = (size_t)(colon - hostport);
	if (n >= sizeof(host))
		return tf__errf(err, -EINVAL, "%s %s: the host is too long", what, url);
	memcpy(host, hostport, n);
	host[n] = '\0';
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
	if (inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127)
		return 0;
	if (inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6))
		return 0;
	if (allow)
		return 0;
	return tf__errf(err, -EPERM,
			"refusing %s %s: '%s' is not a loopback address, and anyone who can reach the socket "
			"%s. Use tcp://127.0.0.1:PORT or an ipc:// socket, or pass --allow_non_loopback if "
			"the network is trusted",
			what, url, host,
			strstr(what, "listen") ? "can make topfetch fetch into --output_dir"
					       : "can read every build's events");
}

/* The folder that holds an ipc:// socket must be ours alone. */
static int check_ipc_folder(const char *url, const char *what, tf_error *err)
{
	const char *path = url + 6, *slash;
	char dir[4096];
	struct stat st;

	if (!*path)
		return tf__errf(err, -EINVAL, "%s %s: expected ipc://PATH (e.g. ipc:///run/user/1000/topfetch/serve.sock)",
				what, url);
	slash = strrchr(path, '/');
	if (!slash) {
		snprintf(dir, sizeof(dir), ".");
	} else if (slash == path) {
		snprintf(dir, sizeof(dir), "/");
	} else {
		if ((size_t)(slash - path) >= sizeof(dir))
			return tf__errf(err, -ENAMETOOLONG, "%s %s: the path is too long", what, url);
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
	}
	if (slash && !slash[1])
		return tf__errf(err, -EINVAL, "%s %s: the path names a folder, not a socket", what, url);
	if (lstat(dir, &st) < 0) {
		if (errno != ENOENT)
			return tf__errf(err, -errno, "%s %s: cannot check folder %s: %s", what, url, dir, strerror(errno));
		if (mkdir(dir, 0700) < 0)
			return tf__errf(err, -errno,
					"%s %s: cannot create folder %s: %s (its parent must exist)", what, url, dir,
					strerror(errno));
		if (lstat(dir, &st) < 0)
			return tf__errf(err, -errno, "%s %s: cannot check folder %s: %s", what, url, dir, strerror(errno));
	}
	if (S_ISLNK(st.st_mode))
		return tf__errf(err, -EPERM,
				"refusing %s %s: folder %s is a symlink; name the real folder, which must be yours "
				"with mode 0700",
				what, url, dir);
	if (!S_ISDIR(st.st_mode))
		return tf__errf(err, -ENOTDIR, "%s %s: %s is not a folder", what, url, dir);
	if (st.st_uid != geteuid())
		return tf__errf(err, -EPERM,
				"refusing %s %s: folder %s belongs to uid %u, not to this user (uid %u); use a "
				"folder of your own with mode 0700",
				what, url, dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if ((st.st_mode & 077) && (st.st_mode & S_ISVTX))
		return tf__errf(err, -EPERM,
				"refusing %s %s: folder %s is shared (mode %04o), and anyone who can open the "
				"socket can make topfetch fetch into --output_dir. Put the socket in a folder of "
				"its own, e.g. ipc://%s/topfetch-%u/serve.sock, which topfetch creates with mode "
				"0700",
				what, url, dir, (unsigned)(st.st_mode & 07777), strcmp(dir, "/") ? dir : "",
				(unsigned)geteuid());
	if (st.st_mode & 077)
		return tf__errf(err, -EPERM,
				"refusing %s %s: folder %s can be used by others (mode %04o), and anyone who can "
				"open the socket can make topfetch fetch into --output_dir. Use a folder only you "
				"can access (chmod 700 %s), or name a folder that does not exist yet and topfetch "
				"creates it with mode 0700",
				what, url, dir, (unsigned)(st.st_mode & 07777), dir);
	return 0;
}

int svc_check_url(const char *url, const char *what, bool allow_non_loopback, bool private_ipc, tf_error *err)
{
	if (!url || !*url)
		return tf__errf(err, -EINVAL, "no %s address given", what);
	if (!strncmp(url, "tcp://", 6))
		return check_tcp(url, what, allow_non_loopback, err);
	if (!strncmp(url, "ipc://", 6))
		return private_ipc ? check_ipc_folder(url, what, err) : 0;
	if (!strncmp(url, "inproc://", 9))
		return 0;
	return tf__errf(err, -EINVAL,
			"%s %s: use ipc://PATH, tcp://127.0.0.1:PORT or tcp://[::1]:PORT (inproc://NAME within "
			"one process)",
			what, url);
}
