/* The download policy: what to fetch, decided after each action executes and
 * again when a target completes (Bazel's RemoteOutputChecker). */
#include <errno.h>
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

int chk_policy_init(chk_policy *p, const tf_policy *in, tf_error *err)
{
	static const char *const default_group[] = { "default" };
	int r;

	memset(p, 0, sizeof(*p));
	p->mode = in->mode;
	if (in->mode != TF_DOWNLOAD_TOPLEVEL && in->mode != TF_DOWNLOAD_ALL && in->mode != TF_DOWNLOAD_MINIMAL)
		return tf__errf(err, -EINVAL, "unknown download mode %d", (int)in->mode);
	r = copy_list(in->n_output_groups ? in->output_groups : default_group,
		      in->n_output_groups ? in->n_output_groups : 1, CHK_MAX_GROUPS, "--output_groups",
		      &p->groups, err);
	p->n_groups = in->n_output_groups ? in->n_output_groups : 1;
	p->listed_groups = in->listed_groups;
	if (r == 0)
		r = copy_list(in->targets, in->n_targets, CHK_MAX_TARGETS, "targets", &p->targets, err);
	p->n_targets = in->n_targets;
	if (r == 0)
		r = copy_list(in->regexes, in->n_regexes, CHK_MAX_REGEXES, "--remote_download_regex",
			      &p->regex_src, err);
	p->n_regex_src = in->n_regexes;
	if (r < 0)
		goto fail;
	if (p->n_targets)
		qsort(p->targets, p->n_targets, sizeof(*p->targets), cmp_str);
	if (in->n_filter_regexes > CHK_MAX_REGEXES) {
		r = tf__errf(err, -E2BIG, "%zu filter regexes given; at most %d are allowed",
			     in->n_filter_regexes, CHK_MAX_REGEXES);
		goto fail;
	}
	if (in->n_filter_regexes) {
		p->filters = calloc(in->n_filter_regexes, sizeof(*p->filters));
		if (!p->filters) {
			r = tf__errf(err, -ENOMEM, "out of memory");
			goto fail;
		}
	}
	for (size_t i = 0; i < in->n_filter_regexes; i++) {
		int rc = regcomp(&p->filters[i], in->filter_regexes[i], REG_EXTENDED | REG_NOSUB);
		if (rc) {
			char why[256];
			regerror(rc, &p->filters[i], why, sizeof(why));
			r = tf__errf(err, -EINVAL, "filter regex '%s' is not a POSIX extended regex: %s",
				     in->filter_regexes[i], why);
			goto fail;
		}
		p->n_filters = i + 1;
	}
	if (in->n_regexes) {
		p->regexes = calloc(in->n_regexes, sizeof(*p->regexes));
		if (!p->regexes) {
			r = tf__errf(err, -ENOMEM, "out of memory");
			goto fail;
		}
	}
	for (size_t i = 0; i < in->n_regexes; i++) {
		int rc = regcomp(&p->regexes[i], in->regexes[i], REG_EXTENDED | REG_NOSUB);
		if (rc) {
			char why[256];
			regerror(rc, &p->regexes[i], why, sizeof(why));
			r = tf__errf(err, -EINVAL, "--remote_download_regex='%s' is not a POSIX extended regex: %s",
				     in->regexes[i], why);
			goto fail;
		}
		p->n_regexes = i + 1;
	}
	return 0;
fail:
	chk_policy_fini(p);
	return r;
}

void chk_policy_fini(chk_policy *p)
{
	for (size_t i = 0; i < p->n_regexes; i++)
		regfree(&p->regexes[i]);
	free(p->regexes);
	for (size_t i = 0; i < p->n_filters; i++)
		regfree(&p->filters[i]);
	free(p->filters);
	for (size_t i = 0; p->regex_src && i < p->n_regex_src; i++)
		free(p->regex_src[i]);
	free(p->regex_src);
	for (size_t i = 0; p->groups && i < p->n_groups; i++)
		free(p->groups[i]);
	free(p->groups);
	for (size_t i = 0; p->targets && i < p->n_targets; i++)
		free(p->targets[i]);
	free(p->targets);
	memset(p, 0, sizeof(*p));
}

bool chk_policy_fetch_on_execution(const chk_policy *p, const char *exec_path)
{
	if (p->mode == TF_DOWNLOAD_ALL)
		return true;
	for (size_t i = 0; i < p->n_regexes; i++)
		if (regexec(&p->regexes[i], exec_path, 0, NULL, 0) == 0)
			return true;
	return false;
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
	if (!p->n_filters)
		return true;
	for (size_t i = 0; i < p->n_filters; i++)
		if (regexec(&p->filters[i], exec_path, 0, NULL, 0) == 0)
			return true;
	return false;
}

bool chk_policy_group_wanted(const chk_policy *p, const char *group)
{
	if (p->listed_groups && group[0] != '_')
		return true;
	for (size_t i = 0; i < p->n_groups; i++)
		if (!strcmp(p->groups[i], group))
			return true;
	return false;
}
