#!/bin/bash
# help: every program's --help is its man page's SYNOPSIS followed by one
# line for each option (every option the SYNOPSIS names has its line),
# --version prints the one version of the project, and every man page is
# clean for mandoc's linter.
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PATH=$root/bin:$PATH LC_ALL=C
cd "$root" || exit 1
fails=0
ok() { if [ "$1" = 0 ]; then echo "PASS: $2"; else echo "FAIL: $2"; fails=$((fails + 1)); fi; }
# the text without the layout: spaces, line breaks, the grouping parentheses
# and the dots of "D ..." (mandoc sets "a | b" where the usage has "a|b")
flat() { tr -d ' \n().'; }

version=$(sed -n 's/^#define VL2V_VERSION "\(.*\)"$/\1/p' lib/version.h)
for src in tools/*.c; do
    t=${src#tools/}
    t=${t%.c}
    case $t in common | query) continue ;; esac
    help=$("$t" --help)
    rc=$?
    rawsyn=$(mandoc -Tascii -O width=250 "man/$t.1" 2>/dev/null | col -bx |
        awk '/^SYNOPSIS/ {on = 1; next} /^[A-Z]/ {on = 0} on')
    syn=$(flat <<<"$rawsyn")
    usage=$(awk '/^  -/ {exit} 1' <<<"$help" | sed 's/^usage: //' | flat)
    ok $([ $rc = 0 ] && [ -n "$syn" ] && [ "$syn" = "$usage" ]; echo $?) "$t --help: its usage is the SYNOPSIS of man/$t.1"
    missing=
    for o in $(grep -oE -- '--[a-z][a-z-]*' <<<"$rawsyn" | sort -u) -h --version; do
        grep -qE -- "^ +(-[a-z], )?$o( |,|$)" <<<"$help" || missing="$missing $o"
    done
    ok $([ -z "$missing" ]; echo $?) "$t --help: one line for each option (missing:${missing:- none})"
    v=$("$t" --version)
    ok $([ $? = 0 ] && [ "$v" = "$t (vl2v) $version" ]; echo $?) "$t --version: '$v'"
done
for m in man/*.[157]; do
    out=$(mandoc -Tlint -W warning "$m" 2>&1)
    ok $([ -z "$out" ]; echo $?) "mandoc -Tlint -W warning $m${out:+: $out}"
done
exit $((fails > 0))
