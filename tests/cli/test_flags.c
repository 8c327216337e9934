/* The flag parser against Bazel's own forms (its RemoteOptions,
 * BuildRequestOptions and Converters in Bazel 4.2.3's source): durations,
 * booleans, expansion flags, repeatable comma lists, header merging, the
 * instance name per cache kind, and the .bazelrc reader. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "tf_test.h"

/* A command as the real ones are built: the remote flags plus a few. */
typedef struct fixture {
	tf_remote_options o;
	cli_remote rem;
	const char *mode, *bep;
	bool keep;
	cli_list groups;
	cli_flag flags[32];
	cli_command cmd;
} fixture;

static void fixture_init(fixture *f)
{
	const cli_flag remote[] = { CLI_REMOTE_FLAGS(&f->o, &f->rem) };
	size_t n = sizeof(remote) / sizeof(remote[0]);

	memset(f, 0, sizeof(*f));
	tf_remote_options_init(&f->o);
	f->rem = (cli_remote)CLI_REMOTE_INIT;
	memcpy(f->flags, remote, sizeof(remote));
	f->flags[n++] = (cli_flag){ "remote_download_outputs", CLI_STRING, &f->mode, "MODE", "m" };
	f->flags[n++] = (cli_flag){ "remote_download_minimal", CLI_SETS, &f->mode, "minimal", "m" };
	f->flags[n++] = (cli_flag){ "remote_download_toplevel", CLI_SETS, &f->mode, "toplevel", "t" };
	f->flags[n++] = (cli_flag){ "keep_path_prefix", CLI_BOOL, &f->keep, "", "k" };
	f->flags[n++] = (cli_flag){ "output_groups", CLI_CSV, &f->groups, "G", "g" };
	f->flags[n++] = (cli_flag){ "bep", CLI_ONCE, &f->bep, "FILE", "b" };
	f->cmd = (cli_command){ .name = "test", .usage = "u", .summary = "s", .flags = f->flags, .nflags = n,
				.remote = &f->rem };
}

static int parse(fixture *f, const char *const *args)
{
	char *argv[32];
	int argc = 0;

	for (; args[argc]; argc++)
		argv[argc] = (char *)args[argc];
	return cli_parse(&f->cmd, argc, argv, NULL);
}

static void fixture_fini(fixture *f)
{
	cli_remote_free(&f->rem);
	cli_list_free(&f->groups);
}

TEST(durations_as_bazel)
{
	static const struct {
		const char *in;
		int64_t ms; /* -1: refused */
	} table[] = {
		{ "60s", 60000 }, { "1m", 60000 },     { "500ms", 500 }, { "60", 60000 }, { "0", 0 },
		{ "2h", 7200000 }, { "1d", 86400000 }, { "0s", 0 },      { "1.5s", -1 }, { "-1", -1 },
		{ "60S", -1 },     { "s", -1 },        { "", -1 },       { "1m30s", -1 }, { " 60s", -1 },
		{ "31d", -1 },
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		int64_t ms = -7;
		int r = cli_parse_duration_ms(table[i].in, &ms);
		if (table[i].ms < 0) {
			if (r == 0)
				fprintf(stderr, "'%s' should be refused\n", table[i].in);
			CHECK(r < 0);
		} else {
			CHECK_INT_EQ(r, 0);
			CHECK_INT_EQ(ms, table[i].ms);
		}
	}
}

TEST(remote_timeout_rounds_up_and_zero_is_no_limit)
{
	static const struct {
		const char *arg;
		int seconds;
	} table[] = { { "--remote_timeout=60s", 60 }, { "--remote_timeout=1m", 60 }, { "--remote_timeout=500ms", 1 },
		      { "--remote_timeout=1500ms", 2 }, { "--remote_timeout=90", 90 },
		      { "--remote_timeout=0", CLI_MAX_TIMEOUT_S } };
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		fixture f;
		const char *args[] = { "--remote_cache=http://h:1", table[i].arg, NULL };
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, args), CLI_RUN);
		CHECK_INT_EQ(cli_remote_finish("test", &f.rem, &f.o), 0);
		CHECK_INT_EQ(f.o.remote_timeout_s, table[i].seconds);
		fixture_fini(&f);
	}
	{
		fixture f;
		const char *bad[] = { "--remote_timeout=60sec", NULL }, *big[] = { "--remote_timeout=2d", NULL };
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, bad), EXIT_USAGE);
		CHECK_INT_EQ(parse(&f, big), CLI_RUN);
		CHECK_INT_EQ(cli_remote_finish("test", &f.rem, &f.o), EXIT_USAGE);
		fixture_fini(&f);
	}
}

TEST(booleans_as_bazel)
{
	static const struct {
		const char *arg;
		int want; /* 0, 1, or -1 refused */
	} table[] = {
		{ "--keep_path_prefix", 1 },         { "--nokeep_path_prefix", 0 },     { "--keep_path_prefix=true", 1 },
		{ "--keep_path_prefix=false", 0 },   { "--keep_path_prefix=yes", 1 },   { "--keep_path_prefix=no", 0 },
		{ "--keep_path_prefix=1", 1 },       { "--keep_path_prefix=0", 0 },     { "--keep_path_prefix=TRUE", 1 },
		{ "--keep_path_prefix=No", 0 },      { "--keep_path_prefix=t", 1 },     { "--keep_path_prefix=n", 0 },
		{ "--keep_path_prefix=maybe", -1 }, { "--nokeep_path_prefix=true", -1 }, { "--keep_path_prefix=", -1 },
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		fixture f;
		const char *args[] = { table[i].arg, NULL };
		fixture_init(&f);
		f.keep = table[i].want == 0; /* the opposite of what is expected */
		if (table[i].want < 0) {
			CHECK_INT_EQ(parse(&f, args), EXIT_USAGE);
		} else {
			CHECK_INT_EQ(parse(&f, args), CLI_RUN);
			CHECK_INT_EQ(f.keep, table[i].want);
		}
		fixture_fini(&f);
	}
}

TEST(expansion_flags_set_the_mode)
{
	fixture f;
	const char *a[] = { "--remote_download_outputs=all", "--remote_download_minimal", NULL };
	const char *b[] = { "--remote_download_minimal", "--remote_download_toplevel", NULL };
	const char *c[] = { "--remote_download_minimal=1", NULL };

	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, a), CLI_RUN);
	CHECK_STR_EQ(f.mode, "minimal");
	CHECK_INT_EQ(parse(&f, b), CLI_RUN);
	CHECK_STR_EQ(f.mode, "toplevel");
	CHECK_INT_EQ(parse(&f, c), EXIT_USAGE);
	fixture_fini(&f);
}

TEST(output_groups_repeatable_comma_lists)
{
	fixture f;
	const char *a[] = { "--output_groups=+a,-b", "--output_groups", "c,,d", "--output_groups=", NULL };

	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, a), CLI_RUN);
	CHECK_INT_EQ(f.groups.n, 4);
	CHECK_STR_EQ(f.groups.items[0], "+a");
	CHECK_STR_EQ(f.groups.items[1], "-b");
	CHECK_STR_EQ(f.groups.items[2], "c");
	CHECK_STR_EQ(f.groups.items[3], "d");
	fixture_fini(&f);
}

TEST(headers_merge_as_bazel)
{
	fixture f;
	const char *a[] = { "--remote_header=A=1", "--remote_header", "a=2", "--remote_cache_header=B=x=y",
			    "--remote_cache_header=A=4", "--remote_header=C=", NULL };
	const char *bad[] = { "--remote_header==v", NULL }, *bad2[] = { "--remote_cache_header=novalue", NULL };

	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, a), CLI_RUN);
	CHECK_INT_EQ(cli_remote_finish("test", &f.rem, &f.o), 0);
	CHECK_INT_EQ(f.o.n_remote_headers, 3);
	CHECK_STR_EQ(f.o.remote_headers[0], "A=1,2,4");
	CHECK_STR_EQ(f.o.remote_headers[1], "C=");
	CHECK_STR_EQ(f.o.remote_headers[2], "B=x=y");
	fixture_fini(&f);
	/* Without a name: passed on unmerged (the library refuses it, not repeating it). */
	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, bad), CLI_RUN);
	CHECK_INT_EQ(parse(&f, bad2), CLI_RUN);
	CHECK_INT_EQ(parse(&f, bad), CLI_RUN);
	CHECK_INT_EQ(cli_remote_finish("test", &f.rem, &f.o), 0);
	CHECK_INT_EQ(f.o.n_remote_headers, 3);
	CHECK_STR_EQ(f.o.remote_headers[0], "=v");
	CHECK_STR_EQ(f.o.remote_headers[1], "=v");
	CHECK_STR_EQ(f.o.remote_headers[2], "novalue");
	fixture_fini(&f);
}

TEST(instance_name_only_for_grpc_and_connections_zero)
{
	static const struct {
		const char *cache;
		bool kept;
	} table[] = { { "--remote_cache=http://h:1/p", false }, { "--remote_cache=https://h", false },
		      { "--remote_cache=/var/cache/bazel", false }, { "--remote_cache=grpc://h:1", true },
		      { "--remote_cache=grpcs://h:1", true } };
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		fixture f;
		const char *args[] = { table[i].cache, "--remote_instance_name=main/ci", "--remote_max_connections=0",
				       NULL };
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, args), CLI_RUN);
		CHECK_INT_EQ(cli_remote_finish("test", &f.rem, &f.o), 0);
		if (table[i].kept)
			CHECK_STR_EQ(f.o.remote_instance_name, "main/ci");
		else
			CHECK(f.o.remote_instance_name == NULL);
		CHECK_INT_EQ(f.o.remote_max_connections, CLI_MAX_CONNECTIONS);
		fixture_fini(&f);
	}
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Each test runs in its own process: its temporary folder goes at its exit. */
static char *temp_dir;

static void remove_temp_dir(void)
{
	if (temp_dir) {
		CHECK_INT_EQ(chdir("/"), 0);
		nftw(temp_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	}
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	CHECK((f = fopen(path, "w")) && fputs(text, f) >= 0 && fclose(f) == 0);
}

/* A workspace in a temporary folder, with its .bazelrc, and a HOME. */
static char *workspace(const char *rc, const char *home_rc)
{
	char *dir = strdup("/tmp/tf-rc-XXXXXX"), path[512];
	FILE *f;

	CHECK(mkdtemp(dir));
	temp_dir = dir;
	atexit(remove_temp_dir);
	snprintf(path, sizeof(path), "%s/ws/sub", dir);
	CHECK(mkdir(path, 0700) < 0); /* ws does not exist yet */
	snprintf(path, sizeof(path), "%s/ws", dir);
	CHECK_INT_EQ(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/ws/sub", dir);
	CHECK_INT_EQ(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/home", dir);
	CHECK_INT_EQ(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/ws/WORKSPACE", dir);
	CHECK((f = fopen(path, "w")) && fclose(f) == 0);
	snprintf(path, sizeof(path), "%s/ws/.bazelrc", dir);
	CHECK((f = fopen(path, "w")) && fputs(rc, f) >= 0 && fclose(f) == 0);
	if (home_rc) {
		snprintf(path, sizeof(path), "%s/home/.bazelrc", dir);
		CHECK((f = fopen(path, "w")) && fputs(home_rc, f) >= 0 && fclose(f) == 0);
	}
	snprintf(path, sizeof(path), "%s/home", dir);
	CHECK_INT_EQ(setenv("HOME", path, 1), 0);
	snprintf(path, sizeof(path), "%s/ws/sub", dir);
	CHECK_INT_EQ(chdir(path), 0);
	return dir;
}

TEST(bazelrc_build_and_common_lines_command_line_wins)
{
	fixture f;
	const char *none[] = { NULL }, *cl[] = { "--remote_timeout=5", "--remote_header=X=cl", NULL };
	workspace("# the cache\n"
			      "build --remote_cache=grpc://cache:1 --remote_timeout=30s --jobs=8 //not:a_flag\n"
			      "common --remote_header=X=rc --remote_download_minimal --noremote_accept_cached\n"
			      "test --remote_retries=9\n"
			      "build --remote_instance_name \"main/ci\" \\\n  --tls_certificate='/etc/a b.pem'\n"
			      "startup --output_base=/x\n",
			      "build --remote_max_connections=7\n");

	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, none), CLI_RUN);
	CHECK_STR_EQ(f.o.remote_cache, "grpc://cache:1");
	CHECK_INT_EQ(f.o.remote_timeout_s, 30);
	CHECK_INT_EQ(f.o.remote_retries, 5); /* test lines are not build's */
	CHECK_INT_EQ(f.o.remote_max_connections, 7);
	CHECK_STR_EQ(f.o.remote_instance_name, "main/ci");
	CHECK_STR_EQ(f.o.tls_certificate, "/etc/a b.pem");
	CHECK(f.mode == NULL); /* --remote_download_* are the build's, not topfetch's */
	CHECK_INT_EQ(f.rem.headers.n, 1);
	fixture_fini(&f);

	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, cl), CLI_RUN);
	CHECK_INT_EQ(f.o.remote_timeout_s, 5);
	CHECK_INT_EQ(cli_remote_finish("test", &f.rem, &f.o), 0);
	CHECK_STR_EQ(f.o.remote_headers[0], "X=rc,cl"); /* rc values first, as Bazel */
	fixture_fini(&f);

	/* --nohome_rc, --noworkspace_rc. */
	{
		const char *a[] = { "--nohome_rc", NULL }, *b[] = { "--noworkspace_rc", NULL };
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, a), CLI_RUN);
		CHECK_INT_EQ(f.o.remote_max_connections, 100);
		CHECK_STR_EQ(f.o.remote_cache, "grpc://cache:1");
		fixture_fini(&f);
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, b), CLI_RUN);
		CHECK_INT_EQ(f.o.remote_max_connections, 7);
		CHECK(f.o.remote_cache == NULL);
		fixture_fini(&f);
	}
}

TEST(bazelrc_imports_configs_and_bazelrc_flag)
{
	fixture f;
	char *dir = workspace("import %workspace%/tools/remote.bazelrc\n"
			      "try-import %workspace%/user.bazelrc\n"
			      "build:ci --remote_timeout=2m --config=auth\n"
			      "common:auth --remote_header=Authorization=Bearer-t\n",
			      NULL);
	char path[512], extra[600];
	const char *none[] = { NULL }, *ci[] = { "--config=ci", NULL }, *undefined[] = { "--config=nope", NULL };

	snprintf(path, sizeof(path), "%s/ws/tools", dir);
	CHECK_INT_EQ(mkdir(path, 0700), 0);
	write_file(dir, "ws/tools/remote.bazelrc", "build --remote_cache=http://imported:8080\n");
	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, none), CLI_RUN);
	CHECK_STR_EQ(f.o.remote_cache, "http://imported:8080");
	CHECK_INT_EQ(f.o.remote_timeout_s, 60);
	fixture_fini(&f);

	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, ci), CLI_RUN);
	CHECK_INT_EQ(f.o.remote_timeout_s, 120);
	CHECK_INT_EQ(f.rem.headers.n, 1);
	fixture_fini(&f);

	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, undefined), EXIT_USAGE);
	fixture_fini(&f);

	/* --bazelrc comes last; /dev/null stops the list. */
	write_file(dir, "extra.rc", "build --remote_cache=http://extra:1\n");
	snprintf(extra, sizeof(extra), "--bazelrc=%s/extra.rc", dir);
	{
		const char *a[] = { extra, NULL }, *b[] = { "--bazelrc=/dev/null", extra, NULL };
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, a), CLI_RUN);
		CHECK_STR_EQ(f.o.remote_cache, "http://extra:1");
		fixture_fini(&f);
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, b), CLI_RUN);
		CHECK_STR_EQ(f.o.remote_cache, "http://imported:8080");
		fixture_fini(&f);
	}

	/* An import loop, and a missing import, are errors. */
	write_file(dir, "ws/tools/remote.bazelrc", "import %workspace%/.bazelrc\n");
	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, none), EXIT_USAGE);
	fixture_fini(&f);
	write_file(dir, "ws/.bazelrc", "import %workspace%/missing.bazelrc\n");
	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, none), EXIT_USAGE);
	fixture_fini(&f);
}

TEST(bazelrc_malformed_value_of_a_known_flag_is_an_error)
{
	static const char *const rcs[] = {
		"build --remote_timeout=soon\n",
		"build --remote_max_connections=many\n",
		"common --remote_cache\n", /* no value */
	};
	char *dir = workspace("", NULL);
	for (size_t i = 0; i < sizeof(rcs) / sizeof(rcs[0]); i++) {
		fixture f;
		const char *none[] = { NULL };
		write_file(dir, "ws/.bazelrc", rcs[i]);
		fixture_init(&f);
		CHECK_INT_EQ(parse(&f, none), EXIT_USAGE);
		fixture_fini(&f);
	}
}

TEST(no_workspace_no_rc)
{
	fixture f;
	const char *none[] = { NULL };
	char *dir = workspace("build --remote_cache=http://ws:1\n", "build --remote_cache=http://home:1\n");
	char path[512];

	snprintf(path, sizeof(path), "%s/home", dir);
	CHECK_INT_EQ(chdir(path), 0); /* outside the workspace: nothing is read */
	fixture_init(&f);
	CHECK_INT_EQ(parse(&f, none), CLI_RUN);
	CHECK(f.o.remote_cache == NULL);
	fixture_fini(&f);
}
