#!/usr/bin/env python3
"""Executes the SQL examples of a Markdown file and compares their output.

    sql-doctest.py [--update] DATABASE_URL FILE.md

Every ```sql block is run, in order, by its own psql (-X -q, TimeZone UTC,
ON_ERROR_STOP off) against DATABASE_URL; objects a block creates are seen by
the next ones. The ```output block right after it (blank lines allowed) is
the expected stdout+stderr; without one, the block must print nothing. psql's
"psql:<stdin>:N: " prefix is dropped, and durations such as "5.2 ms" compare
as "<ms>", and column alignment is ignored. ```pgsql blocks are illustrations and are not run.
--update rewrites the output blocks with what psql printed (review the diff!).
Exit 0 when every block matches, 1 otherwise (a missing psql is a failure).
"""
import os
import re
import shutil
import subprocess
import sys
import time

FENCE = re.compile(r"^```(\w*)\s*$")
MS = re.compile(r"\b\d+(\.\d+)? ms\b")
PREFIX = re.compile(r"^psql:<stdin>:\d+: ", re.M)


def parse(lines):
    """Yields (sql_start, sql_end, sql_text, out_start, out_end, expected)
    with line indexes of the fences; out_* are None without an output block."""
    i, n = 0, len(lines)
    blocks = []
    while i < n:
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < n and not lines[j].startswith("```"):
            j += 1
        if j >= n:
            sys.exit(f"unterminated code block at line {start + 1}")
        if lang == "sql":
            k = j + 1
            while k < n and lines[k].strip() == "":
                k += 1
            if k < n and lines[k].strip() == "```output":
                e = k + 1
                while e < n and not lines[e].startswith("```"):
                    e += 1
                blocks.append((start, j, "".join(lines[start + 1:j]), k, e, "".join(lines[k + 1:e])))
                i = e + 1
                continue
            blocks.append((start, j, "".join(lines[start + 1:j]), None, None, ""))
        i = j + 1
    return blocks


def run(url, sql):
    env = dict(os.environ, PGOPTIONS="-c TimeZone=UTC -c client_min_messages=notice", PGTZ="UTC")
    r = subprocess.run(["psql", "-X", "-q", "-P", "pager=off", "-v", "ON_ERROR_STOP=0", "-d", url],
                       input=sql, capture_output=True, text=True, env=env, timeout=300)
    return PREFIX.sub("", r.stdout + r.stderr)


def norm(text):
    """Durations become <ms>; column alignment is ignored (runs of spaces and
    of dashes collapse), so a wider duration does not fail a block."""
    out = []
    for line in MS.sub("<ms>", text.replace("\r", "")).strip("\n").split("\n"):
        line = re.sub(r" {2,}", " ", line.rstrip())
        out.append(re.sub(r"-{3,}", "---", line))
    return "\n".join(out) + "\n"


def main():
    args = sys.argv[1:]
    update = bool(args) and args[0] == "--update"
    if update:
        args = args[1:]
    if len(args) != 2:
        sys.exit(__doc__)
    url, path = args
    if shutil.which("psql") is None:
        sys.exit("sql-doctest: psql not found")
    lines = open(path).read().splitlines(keepends=True)
    blocks = parse(lines)
    if not blocks:
        sys.exit(f"sql-doctest: no ```sql blocks in {path}")
    failures, replacements = 0, []
    for (s, e, sql, os_, oe, expected) in blocks:
        t0 = time.monotonic()
        actual = run(url, sql)
        if time.monotonic() - t0 > 5:
            print(f"sql-doctest: {path}:{s + 1}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
        if norm(actual) == norm(expected) or (os_ is None and actual.strip() == ""):
            continue
        if update:
            replacements.append((s, e, os_, oe, actual))
            continue
        failures += 1
        print(f"--- {path}:{s + 1}: block output differs", file=sys.stderr)
        print("SQL:\n" + sql.rstrip(), file=sys.stderr)
        print("expected:\n" + (expected.rstrip() or "(nothing)"), file=sys.stderr)
        print("actual:\n" + (actual.rstrip() or "(nothing)"), file=sys.stderr)
    if update:
        for (s, e, os_, oe, actual) in reversed(replacements):
            block = ["```output\n"] + [actual.rstrip("\n") + "\n"] + ["```\n"]
            if os_ is None:
                lines[e + 1:e + 1] = ["\n"] + block
            else:
                lines[os_:oe + 1] = block
        open(path, "w").write("".join(lines))
        print(f"sql-doctest: {len(blocks)} blocks, {len(replacements)} output blocks rewritten in {path}")
        return 0
    print(f"sql-doctest: {len(blocks) - failures}/{len(blocks)} SQL blocks of {path} match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
