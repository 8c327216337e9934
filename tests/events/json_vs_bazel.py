#!/usr/bin/env python3
"""Our --build_event_json_file against Bazel's own, for the three Bazel 4.2.3
fixture runs: bep_convert reads each bep.bin and writes JSON lines; every
line must parse (Python's json, strict UTF-8) and equal the line Bazel wrote
in bep.json for the same event id, as JSON objects (Bazel orders fields by
declaration, we by number, so bytes differ). Lines are paired by event id,
not by position: Bazel 4.2.3 writes its two files from separate queues, and
events posted at the same moment (say two named sets) may land in the JSON
file in another order than in the binary one. Escaping is compared too: Bazel's Gson writes '='
as \\u003d, and we must write exactly as many.

The only differences allowed are the ones our proto/ subset causes, each
named here and each required to occur exactly as expected:
  * the buildMetrics payload (BuildEvent field 24) is not in our schema, so
    that event's JSON lacks it (the binary writer keeps it);
  * Bazel 4.2.3's OptionMetadataTag TRIGGERED_BY_ALL_INCOMPATIBLE_CHANGES (5)
    is not in our option_filters.proto, so we write the number 5 where
    Bazel writes the name (proto3 JSON's rule for unknown enum values).
    Accepted only in that form; once the value is added to the schema the
    names match and this exception simply goes unused.
Usage: json_vs_bazel.py BEP_CONVERT (TF_FIXTURES set)."""
import json
import os
import subprocess
import sys

RUNS = ["run1_populate", "run2_minimal_hits", "run3_toplevel_hits"]


def diff(ours, theirs, path, out):
    if type(ours) is not type(theirs) and not (
            isinstance(ours, (int, float)) and isinstance(theirs, (int, float))
            and not isinstance(ours, bool) and not isinstance(theirs, bool)):
        out.append(("type", path, ours, theirs))
        return
    if isinstance(ours, dict):
        for k in sorted(set(ours) | set(theirs)):
            if k not in ours:
                out.append(("missing", path + "." + k, None, theirs[k]))
            elif k not in theirs:
                out.append(("extra", path + "." + k, ours[k], None))
            else:
                diff(ours[k], theirs[k], path + "." + k, out)
    elif isinstance(ours, list):
        if len(ours) != len(theirs):
            out.append(("length", path, len(ours), len(theirs)))
            return
        for i, (a, b) in enumerate(zip(ours, theirs)):
            diff(a, b, "%s[%d]" % (path, i), out)
    elif ours != theirs:
        out.append(("value", path, ours, theirs))


def whitespace_outside_strings(text):
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in " \t\r\n":
            return True
    return False


def allowed(d, theirs_line):
    kind, path, ours, theirs = d
    if kind == "missing" and path == ".buildMetrics" and "buildMetrics" in theirs_line["id"]:
        return "buildMetrics"
    if (kind == "type" and ".metadataTags[" in path and ours == 5
            and theirs == "TRIGGERED_BY_ALL_INCOMPATIBLE_CHANGES"):
        return "metadataTag5"
    return None


def main():
    convert = sys.argv[1]
    fixtures = os.environ["TF_FIXTURES"]
    failures = 0
    for run in RUNS:
        bep_bin = os.path.join(fixtures, run, "bep.bin")
        bep_json = os.path.join(fixtures, run, "bep.json")
        proc = subprocess.run([convert, "json", bep_bin, "-"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            print("%s: bep_convert failed: %s" % (run, proc.stderr.decode(errors="replace")))
            return 1
        text = proc.stdout.decode("utf-8")  # strict: invalid UTF-8 fails here
        if not text.endswith("\n"):
            print("%s: output does not end with a newline" % run)
            return 1
        ours = text[:-1].split("\n")
        with open(bep_json, encoding="utf-8") as f:
            theirs = f.read().rstrip("\n").split("\n")
        if len(ours) != 45 or len(theirs) != 45:
            print("%s: %d lines, Bazel wrote %d (want 45)" % (run, len(ours), len(theirs)))
            return 1
        seen = {"buildMetrics": 0, "metadataTag5": 0}
        by_id = {}
        for b_text in theirs:
            by_id[json.dumps(json.loads(b_text)["id"], sort_keys=True)] = b_text
        if len(by_id) != 45:
            print("%s: Bazel's bep.json repeats an event id" % run)
            return 1
        for n, a_text in enumerate(ours, 1):
            a = json.loads(a_text)
            if not isinstance(a, dict) or not isinstance(a.get("id"), dict):
                print("%s line %d: not a JSON object with an id" % (run, n))
                failures += 1
                continue
            b_text = by_id.pop(json.dumps(a["id"], sort_keys=True), None)
            if b_text is None:
                print("%s line %d: id %s is not in Bazel's bep.json, or twice in ours" % (run, n, a["id"]))
                failures += 1
                continue
            b = json.loads(b_text)
            out = []
            diff(a, b, "", out)
            for d in out:
                why = allowed(d, b)
                if why:
                    seen[why] += 1
                else:
                    failures += 1
                    print("%s line %d: %s at %s: ours %r, Bazel's %r" % (
                        run, n, d[0], d[1] or "(top)", str(d[2])[:200], str(d[3])[:200]))
            if a_text.count("\\u003d") != b_text.count("\\u003d"):
                failures += 1
                print("%s line %d: %d '=' escaped as \\u003d, Bazel %d" % (
                    run, n, a_text.count("\\u003d"), b_text.count("\\u003d")))
            # Compact output, as Bazel's: no whitespace between tokens.
            if whitespace_outside_strings(a_text):
                failures += 1
                print("%s line %d: whitespace between JSON tokens" % (run, n))
        if seen["buildMetrics"] != 1:
            failures += 1
            print("%s: expected the buildMetrics payload to be the one missing field, saw %d"
                  % (run, seen["buildMetrics"]))
        print("%s: 45 lines compared as JSON objects; known differences seen: %s" % (run, seen))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
