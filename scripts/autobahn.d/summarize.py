#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite fuzzingclient report for scripts/autobahn.

Reads <outdir>/index.json and, for the cases that failed, their per-case JSON; prints a
Markdown table per case group (the first number of the case id) with the counts of each
behaviour, a total row, and the failed cases with what the suite expected and what it got.
Writes the same Markdown to --markdown. Exit status: 0 when no case failed, 1 when one did,
2 when the report is missing, empty or unreadable.
"""

import argparse
import json
import os
import sys

COLUMNS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]

# The case categories of the suite (autobahntestsuite/case/__init__.py).
GROUP_NAMES = {
    1: "Framing",
    2: "Pings/Pongs",
    3: "Reserved bits",
    4: "Opcodes",
    5: "Fragmentation",
    6: "UTF-8 handling",
    7: "Close handling",
    9: "Limits/performance",
    10: "Miscellaneous",
    12: "permessage-deflate (payloads)",
    13: "permessage-deflate (parameters)",
}

# Closing behaviours the suite's own report shows in red or orange (case/case.py).
CLOSE_REMARKS = {"FAILED", "UNCLEAN", "WRONG CODE", "FAILED BY CLIENT"}

# Failed cases whose details go to stdout (the Markdown file has all).
STDOUT_DETAILED = 10

# How much of a per-case `expected` / `received` list to quote.
MAX_EVENTS_CHARS = 600


def case_key(case_id):
    """Numeric sort key of a case id such as `6.4.10`."""
    key = []
    for part in case_id.split("."):
        try:
            key.append(int(part))
        except ValueError:
            key.append(0)
    return tuple(key)


def column(behavior):
    """The table column a case's `behavior` counts in; anything unknown counts as FAILED."""
    if behavior in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
        return behavior
    return "FAILED"


def quote(value, limit=MAX_EVENTS_CHARS):
    text = json.dumps(value, sort_keys=True)
    if len(text) > limit:
        text = text[:limit] + "... (%d chars)" % len(text)
    return text


def case_details(outdir, case_id, entry):
    """The lines that explain one case, from its per-case report JSON."""
    lines = []
    report = None
    path = os.path.join(outdir, entry.get("reportfile", ""))
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError) as error:
        lines.append("  - (per-case report %s unreadable: %s)" % (path, error))
    if report is None:
        lines.append(
            "  - behavior %s, closing behavior %s, remote close code %s"
            % (entry.get("behavior"), entry.get("behaviorClose"), entry.get("remoteCloseCode"))
        )
        return lines
    lines.append("  - description: %s" % " ".join(str(report.get("description", "")).split()))
    lines.append("  - expectation: %s" % " ".join(str(report.get("expectation", "")).split()))
    lines.append(
        "  - result: %s (behavior %s)" % (report.get("result"), report.get("behavior"))
    )
    lines.append(
        "  - closing: %s (behavior %s; remote close code %s, reason %s; clean %s%s)"
        % (
            report.get("resultClose"),
            report.get("behaviorClose"),
            report.get("remoteCloseCode"),
            quote(report.get("remoteCloseReason")),
            report.get("wasClean"),
            "" if report.get("wasClean") else ", " + str(report.get("wasNotCleanReason")),
        )
    )
    lines.append("  - expected: `%s`" % quote(report.get("expected")))
    lines.append("  - received: `%s`" % quote(report.get("received")))
    lines.append("  - report: %s" % path)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", help="the fuzzingclient's outdir (holds index.json)")
    parser.add_argument("--title", default="Autobahn|Testsuite")
    parser.add_argument("--markdown", help="also write the Markdown here")
    args = parser.parse_args()

    index_path = os.path.join(args.outdir, "index.json")
    try:
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, ValueError) as error:
        print("autobahn: no readable report at %s: %s" % (index_path, error), file=sys.stderr)
        return 2
    if len(index) != 1:
        print("autobahn: expected one agent in %s, found %d" % (index_path, len(index)),
              file=sys.stderr)
        return 2
    agent, cases = next(iter(index.items()))
    if not cases:
        print("autobahn: %s holds no case" % index_path, file=sys.stderr)
        return 2

    counts = {}
    failed = []
    close_remarks = []
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id]
        group = case_key(case_id)[0]
        col = column(entry.get("behavior"))
        counts.setdefault(group, dict.fromkeys(COLUMNS, 0))[col] += 1
        if col == "FAILED":
            failed.append(case_id)
        elif col != "UNIMPLEMENTED" and entry.get("behaviorClose") in CLOSE_REMARKS:
            close_remarks.append(case_id)

    out = ["## %s: %s" % (args.title, agent), ""]
    out.append("| group | " + " | ".join(COLUMNS) + " | total |")
    out.append("|---|" + "---:|" * (len(COLUMNS) + 1))
    totals = dict.fromkeys(COLUMNS, 0)
    for group in sorted(counts):
        row = counts[group]
        name = GROUP_NAMES.get(group, "")
        label = "%d %s" % (group, name) if name else str(group)
        out.append("| %s | %s | %d |" % (
            label, " | ".join(str(row[c]) for c in COLUMNS), sum(row.values())))
        for c in COLUMNS:
            totals[c] += row[c]
    grand = sum(totals.values())
    out.append("| **total** | %s | **%d** |" % (
        " | ".join("**%d**" % totals[c] for c in COLUMNS), grand))
    run = grand - totals["UNIMPLEMENTED"]
    unimplemented_groups = [str(g) for g in sorted(counts) if counts[g]["UNIMPLEMENTED"]]
    out.append("")
    out.append("%d cases, %d run (%d UNIMPLEMENTED%s): %d OK, %d NON-STRICT, %d INFORMATIONAL, "
               "%d FAILED."
               % (grand, run, totals["UNIMPLEMENTED"],
                  ", in groups " + ", ".join(unimplemented_groups) if unimplemented_groups else "",
                  totals["OK"], totals["NON-STRICT"], totals["INFORMATIONAL"], totals["FAILED"]))
    for name in ("NON-STRICT", "INFORMATIONAL"):
        ids = [c for c in sorted(cases, key=case_key) if cases[c].get("behavior") == name]
        if ids:
            out.append("")
            out.append("%s: %s." % (name, ", ".join(ids)))

    # stdout gets the details of the first few failed cases and a line for each other one; the
    # Markdown file gets the details of all.
    short = list(out)
    if failed:
        for lines, limit in ((out, len(failed)), (short, STDOUT_DETAILED)):
            lines.append("")
            lines.append("### FAILED cases (%d)" % len(failed))
            lines.append("")
            for number, case_id in enumerate(failed):
                entry = cases[case_id]
                if number < limit:
                    lines.append("- **%s**" % case_id)
                    lines.extend(case_details(args.outdir, case_id, entry))
                else:
                    lines.append("- **%s**: behavior %s, closing behavior %s, remote close code %s"
                                 % (case_id, entry.get("behavior"), entry.get("behaviorClose"),
                                    entry.get("remoteCloseCode")))
            if limit < len(failed):
                lines.append("")
                lines.append("(details of every failed case: %s)" % (args.markdown or args.outdir))
    if close_remarks:
        for lines in (out, short):
            lines.append("")
            lines.append("### Cases that passed with a closing-handshake remark (%d)"
                         % len(close_remarks))
            lines.append("")
            for case_id in close_remarks:
                entry = cases[case_id]
                lines.append("- %s: closing behavior %s, remote close code %s"
                             % (case_id, entry.get("behaviorClose"), entry.get("remoteCloseCode")))

    sys.stdout.write("\n".join(short) + "\n")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write("\n".join(out) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
