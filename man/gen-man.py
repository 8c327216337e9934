#!/usr/bin/env python3
"""Writes topfetch.1 from the binary's own help, with help2man.

    gen-man.py HELP2MAN TOPFETCH OUTPUT

The page is help2man's rendering of `topfetch --help` and `topfetch --version`,
followed by one section per command (`topfetch COMMAND --help`, rendered by
help2man too). The commands are read from the `Commands:` list of
`topfetch --help`, so a new command gets its section without a change here.
"""
import os
import re
import subprocess
import sys
import tempfile

help2man, topfetch, output = sys.argv[1:4]


def run(*args):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"gen-man.py: {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def commands(main_help):
    """The names in the `Commands:` block of `topfetch --help`, but help/version."""
    names, inside = [], False
    for line in main_help.splitlines():
        if line.strip() == "Commands:":
            inside = True
            continue
        if inside:
            m = re.match(r"^  ([a-z][a-z0-9_-]*)\s", line)
            if not m:
                if line.strip() == "":
                    break
                continue
            if m.group(1) not in ("help", "version"):
                names.append(m.group(1))
    if not names:
        sys.exit("gen-man.py: found no 'Commands:' list in 'topfetch --help'")
    return names


def command_section(cmd, version):
    """help2man's page for `topfetch CMD --help`, cut to its synopsis and body."""
    page = run(help2man, "--no-info", "--no-discard-stderr", f"--help-option={cmd} --help",
               f"--version-string={version}", f"--name=topfetch {cmd}", topfetch)
    body, keep = [], False
    for line in page.splitlines():
        if line.startswith(".SH SYNOPSIS"):
            keep = True
            continue
        if not keep or line.startswith(".SH DESCRIPTION"):
            if keep:
                body.append(".PP")
            continue
        if line.startswith(".SH "):  # help2man's own trailing sections
            break
        body.append(line)
    return [f"[topfetch {cmd}]"] + body


main_help = run(topfetch, "--help")
version = run(topfetch, "--version").splitlines()[0]
version = version[len("topfetch "):] if version.startswith("topfetch ") else version
include = []
for cmd in commands(main_help):
    include += command_section(cmd, version)
include += ["[SEE ALSO]",
            "The README of the source distribution: every flag whose meaning differs from Bazel's,",
            "the proxy, collect, serve and fetch in detail, and the security model."]

with tempfile.NamedTemporaryFile("w", suffix=".h2m", delete=False) as f:
    f.write("\n".join(include) + "\n")
    inc = f.name
try:
    page = run(help2man, "--no-info", f"--include={inc}",
               "--name=build without the bytes: fetch wanted outputs from a Bazel remote cache",
               topfetch)
finally:
    os.unlink(inc)
with open(output, "w") as out:
    out.write(page)
