/* What the commands tell the user at the end and on the way: the line for a
 * file that did not make it, the session's progress line, the summary
 * lines, and the exit code for an error. One place, so every command words
 * them alike. */
#include <errno.h>

#include "cli/cli.h"

int cli_exit_for_error(int code)
{
	switch (code) {
	case -ENODATA: /* the BEP ended without last_message */
	case -EBADMSG: /* malformed input */
	case -EMSGSIZE:
	case -ENOENT:  /* an input that is not there */
	case -ELOOP:   /* a named-set cycle */
		return EXIT_BAD_INPUT;
	default:
		return EXIT_SOME_FAILED;
	}
}

void cli_report_lost(cli_progress *p, const tf_lost_output *l, const char *consequence)
{
	char digest[TF_HASH_HEX_LEN + 32] = "";

	/* A file whose digest is not known (an over-cap Tree, say) has none to show. */
	if (l->digest.hash[0])
		snprintf(digest, sizeof(digest), " (%s/%lld)", l->digest.hash, (long long)l->digest.size);
	cli_progress_error(p, "topfetch: %s: %s%s%s%s%s%s: %s%s%s", tf_result_name(l->result), l->path, digest,
			   l->action_key ? ", produced by action " : "",
			   l->action_key ? l->action_key : "", l->target ? " of " : "", l->target ? l->target : "",
			   l->message, l->action_key && consequence ? "; " : "",
			   l->action_key && consequence ? consequence : "");
}

void cli_report_session_progress(cli_progress *p, const tf_session_stats *st, bool force)
{
	tf_downloader_stats ds = {
		.requests = st->files_wanted,
		.files_ok = st->files_fetched + st->files_present,
		.bytes = st->bytes_fetched,
		.lost = st->lost,
		.failed = st->failed,
	};
	cli_progress_update(p, &ds, st->files_wanted, force);
}

void cli_report_fetch_summary(const cli_progress *p, const tf_downloader_stats *st, bool interrupted)
{
	char bytes[32], rate[32];
	double secs = cli_elapsed_s(p);

	cli_human_bytes((double)st->bytes, bytes, sizeof(bytes));
	cli_human_bytes(secs > 0 ? (double)st->bytes / secs : 0, rate, sizeof(rate));
	printf("topfetch: %s%llu of %llu files in place (%llu fetched, %llu already present, %llu shared a "
	       "blob), %s in %.2f s, %s/s; %llu lost, %llu corrupt, %llu failed, %llu local errors\n",
	       interrupted ? "INTERRUPTED: " : "", (unsigned long long)st->files_ok,
	       (unsigned long long)st->requests, (unsigned long long)st->transfers,
	       (unsigned long long)st->files_present, (unsigned long long)st->files_linked, bytes, secs, rate,
	       (unsigned long long)st->lost, (unsigned long long)st->corrupt, (unsigned long long)st->failed,
	       (unsigned long long)st->local);
	fflush(stdout);
}

void cli_report_collect_summary(const cli_progress *p, const tf_session_stats *st)
{
	char bytes[32];

	cli_human_bytes((double)st->bytes_fetched, bytes, sizeof(bytes));
	printf("topfetch: %llu of %llu targets complete, %llu files in place (%llu fetched, %llu already present), "
	       "%s in %.2f s; %llu lost, %llu failed, %llu without a digest, %llu conflicting\n",
	       (unsigned long long)(st->targets_completed - st->targets_failed),
	       (unsigned long long)st->targets_completed,
	       (unsigned long long)(st->files_fetched + st->files_present), (unsigned long long)st->files_fetched,
	       (unsigned long long)st->files_present, bytes, cli_elapsed_s(p), (unsigned long long)st->lost,
	       (unsigned long long)st->failed, (unsigned long long)st->files_unknown,
	       (unsigned long long)st->conflicts);
	fflush(stdout);
}
