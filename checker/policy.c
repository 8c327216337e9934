/* The download policy: what to fetch, decided after each action executes and
 * again when a target completes (Bazel's RemoteOutputChecker). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "checker/checker.h"

int tf_download_mode_parse(const char *s, tf_download_mode *out)
{
	if (!strcmp(s, "toplevel"))
		*out = TF_DOWNLOAD_TOPLEVEL;
	else if (!strcmp(s, "all"))
		*out = TF_DOWNLOAD_ALL;
	else if (!strcmp(s, "minimal"))
		*out = TF_DOWNLOAD_MINIMAL;
	else
		return -EINVAL;
	return 0;
}

const char *tf_download_mode_name(tf_download_mode m)
{
	switch (m) {
	case TF_DOWNLOAD_TOPLEVEL: return "toplevel";
	case TF_DOWNLOAD_ALL: return "all";
	case TF_DOWNLOAD_MINIMAL: return "minimal";
	}
	return "?";
}

static int copy_list(const char *const *in, size_t n, size_t max, const char *what, char ***out,
		     tf_error *err)
{
	if (n > max)
		return tf__errf(err, -E2BIG, "%zu %s given; at most %zu are allowed", n, what, max);
	*out = n ? calloc(n, sizeof(**out)) : NULL;
	if (n && !*out)
		return tf__errf(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		if (!((*out)[i] = strdup(in[i])))
			return tf__errf(err, -ENOMEM, "out of memory");
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Compiles each of in[] (PCRE2, the closest to Java's java.util.regex that
 * Debian has: \d, (?:...), lookarounds); whole: it must match the whole
 * path, as Bazel's Matcher.matches(). */
static int compile_all(const char *const *in, size_t n, bool whole, const char *what, pcre2_code ***out,
		       size_t *n_out, tf_error *err)
{
	if (n > CHK_MAX_REGEXES)
		return tf__errf(err, -E2BIG, "%zu %s given; at most %d are allowed", n, what, CHK_MAX_REGEXES);
	*out = n ? calloc(n, sizeof(**out)) : NULL;
	if (n && !*out)
		return tf__errf(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		int code;
		PCRE2_SIZE at;

		(*out)[i] = pcre2_compile((PCRE2_SPTR)in[i], PCRE2_ZERO_TERMINATED,
					  PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (whole ? PCRE2_ANCHORED | PCRE2_ENDANCHORED : 0), &code, &at, NULL);
		if (!(*out)[i]) {
			PCRE2_UCHAR why[256];
			pcre2_get_error_message(code, why, sizeof(why));
			return tf__errf(err, -EINVAL, "%s='%s' is not a valid regular expression: %s at offset %zu", what,
					in[i], (const char *)why, (size_t)at);
		}
		*n_out = i + 1;
	}
	return 0;
}

static bool match_any(pcre2_code *const *re, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++) {
		pcre2_match_data *md = pcre2_match_data_create_from_pattern(re[i], NULL);
		int rc = md ? pcre2_match(re[i], (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL) : -1;
		pcre2_match_data_free(md);
		if (rc >= 0)
			return true;
	}
	return false;
}

static bool in_list(char *const *l, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i], s))
			return true;
	return false;
}

/* Moves name into *to (once) and out of *from. */
static int move_group(const char *name, char ***to, size_t *n_to, char **from, size_t *n_from, tf_error *err)
{
	for (size_t i = 0; i < *n_from; i++)
		if (!strcmp(from[i], name)) {
			free(from[i]);
			from[i] = from[--*n_from];
			break;
		}
	if (in_list(*to, *n_to, name))
		return 0;
	char **n = realloc(*to, (*n_to + 1) * sizeof(*n));
	if (!n || !(n[*n_to] = strdup(name))) {
		if (n)
			*to = n;
		return tf__errf(err, -ENOMEM, "out of memory");
	}
	*to = n;
	(*n_to)++;
	return 0;
}

/* Bazel's OutputGroupInfo.determineOutputGroups: when every entry starts
 * with + or -, they add to and remove from the default set (the groups a
 * TargetComplete lists, or "default"); otherwise the default set is dropped
 * and the entries name the groups; later entries win over earlier ones. */
static int resolve_groups(chk_policy *p, const tf_policy *in, tf_error *err)
{
	bool relative = true;
	int r = 0;

	if (in->n_output_groups > CHK_MAX_GROUPS)
		return tf__errf(err, -E2BIG, "%zu --output_groups given; at most %d are allowed", in->n_output_groups,
				CHK_MAX_GROUPS);
	for (size_t i = 0; i < in->n_output_groups; i++)
		if (in->output_groups[i][0] != '+' && in->output_groups[i][0] != '-')
			relative = false;
	p->listed_groups = relative && in->listed_groups;
	if (relative && !in->listed_groups)
		r = move_group("default", &p->groups, &p->n_groups, p->removed, &p->n_removed, err);
	for (size_t i = 0; r == 0 && i < in->n_output_groups; i++) {
		const char *g = in->output_groups[i];
		if (*g == '-')
			r = move_group(g + 1, &p->removed, &p->n_removed, p->groups, &p->n_groups, err);
		else
			r = move_group(g + (*g == '+'), &p->groups, &p->n_groups, p->removed, &p->n_removed, err);
	}
	return r;
}

int chk_policy_init(chk_policy *p, const tf_policy *in, tf_error *err)
{
	int r;

	memset(p, 0, sizeof(*p));
	p->mode = in->mode;
	if (in->mode != TF_DOWNLOAD_TOPLEVEL && in->mode != TF_DOWNLOAD_ALL && in->mode != TF_DOWNLOAD_MINIMAL)
		return tf__errf(err, -EINVAL, "unknown download mode %d", (int)in->mode);
	r = resolve_groups(p, in, err);
	if (r == 0)
		r = copy_list(in->targets, in->n_targets, CHK_MAX_TARGETS, "targets", &p->targets, err);
	p->n_targets = in->n_targets;
	if (r == 0)
		r = copy_list(in->regexes, in->n_regexes, CHK_MAX_REGEXES, "--remote_download_regex",
			      &p->regex_src, err);
	p->n_regex_src = in->n_regexes;
	if (r == 0)
		r = compile_all(in->filter_regexes, in->n_filter_regexes, false, "--output_filter", &p->filters,
				&p->n_filters, err);
	if (r == 0)
		r = compile_all(in->regexes, in->n_regexes, true, "--remote_download_regex", &p->regexes,
				&p->n_regexes, err);
	if (r < 0) {
		chk_policy_fini(p);
		return r;
	}
	if (p->n_targets)
		qsort(p->targets, p->n_targets, sizeof(*p->targets), cmp_str);
	return 0;
}

static void free_list(char **l, size_t n)
{
	for (size_t i = 0; l && i < n; i++)
		free(l[i]);
	free(l);
}

void chk_policy_fini(chk_policy *p)
{
	for (size_t i = 0; i < p->n_regexes; i++)
		pcre2_code_free(p->regexes[i]);
	free(p->regexes);
	for (size_t i = 0; i < p->n_filters; i++)
		pcre2_code_free(p->filters[i]);
	free(p->filters);
	free_list(p->regex_src, p->n_regex_src);
	free_list(p->groups, p->n_groups);
	free_list(p->removed, p->n_removed);
	free_list(p->targets, p->n_targets);
	memset(p, 0, sizeof(*p));
}

bool chk_policy_regex_matches(const chk_policy *p, const char *exec_path)
{
	return match_any(p->regexes, p->n_regexes, exec_path);
}

bool chk_policy_fetch_on_execution(const chk_policy *p, const char *exec_path)
{
	return p->mode == TF_DOWNLOAD_ALL || chk_policy_regex_matches(p, exec_path);
}

bool chk_policy_target_wanted(const chk_policy *p, const char *label)
{
	const char *key = label;
	if (p->mode == TF_DOWNLOAD_MINIMAL)
		return false;
	return !p->n_targets || bsearch(&key, p->targets, p->n_targets, sizeof(*p->targets), cmp_str);
}

bool chk_policy_file_wanted(const chk_policy *p, const char *exec_path)
{
	return !p->n_filters || match_any(p->filters, p->n_filters, exec_path);
}

bool chk_policy_group_wanted(const chk_policy *p, const char *group)
{
	if (in_list(p->removed, p->n_removed, group))
		return false;
	return in_list(p->groups, p->n_groups, group) || (p->listed_groups && group[0] != '_');
}
