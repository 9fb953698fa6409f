#!/bin/bash
# text_embed: text-embed against the PyTorch reference of CLIP's text tower
# and prompt ensembling (tests/ref/text_embed_ref.py, built on clip_ref.py and
# tok_ref.py), random weights with the real vocabulary and context, in both
# naming schemes, at a tiny text tower and at ViT-B/16's; class names from a
# list and from a manifest, templates, batching, truncation; the errors.
set -u
: "${VL2V_ROOT:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PYTHON:=/usr/bin/python3}"
cd "$VL2V_ROOT" || exit 1
export PATH="$VL2V_ROOT/bin:$PATH"
SHARED=${SHARED:-$(cd .. && pwd)/shared}
BPE=$SHARED/data/clip/bpe_simple_vocab_16e6.txt.gz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ref="$PYTHON tests/ref/text_embed_ref.py"
fail=0
pass() { echo "PASS: $*"; }
failed() { echo "FAIL: $*"; fail=1; }
CN=tests/ref/classnames

[ -r "$BPE" ] || { failed "text-embed: no merges file $BPE"; exit 1; }
d=$tmp/tiny
$ref make --text tiny --bpe "$BPE" --out "$d" --openai || { failed "text-embed: tiny reference model"; exit 1; }
head -n 5 tests/ref/imagenet_templates.txt > "$tmp/t5.txt"

# run NAME COMPARE-ARGS -- TEXT-EMBED-ARGS: runs text-embed, compares with the reference
run() {
    local name=$1 cargs=() targs=()
    shift
    while [ "$1" != -- ]; do cargs+=("$1"); shift; done
    shift
    targs=("$@")
    if text-embed "${targs[@]}" -o "$tmp/o.mp" 2>"$tmp/err"; then
        $ref compare "$d" "$tmp/o.mp" "text-embed: $name = PyTorch" --bpe "$BPE" "${cargs[@]}"
    else
        failed "text-embed: $name runs ($(head -c 300 "$tmp/err"))"
    fi
}

run "tiny, HF directory, 5 templates" --classes $CN/pacs.txt --templates "$tmp/t5.txt" -- \
    --model "$d/hf" --classes $CN/pacs.txt --templates "$tmp/t5.txt"
cp "$tmp/o.mp" "$tmp/hf.mp"
run "tiny, OpenAI names, --bpe" --classes $CN/pacs.txt --templates "$tmp/t5.txt" -- \
    --model "$d/openai.safetensors" --bpe "$BPE" --classes $CN/pacs.txt --templates "$tmp/t5.txt"
# (the spaces differ: the model ids hash different files)
$PYTHON - "$tmp/hf.mp" "$tmp/o.mp" <<'PY' &&
import sys, msgpack, numpy as np
a, b = [[np.frombuffer(o["vec"], "<f4") for o in list(msgpack.Unpacker(open(p, "rb"), raw=False))[1:-1]]
        for p in sys.argv[1:]]
sys.exit(0 if len(a) == len(b) and all(np.abs(x - y).max() <= 1e-6 for x, y in zip(a, b)) else 1)
PY
    pass "text-embed: both naming schemes give the same vectors" ||
    failed "text-embed: both naming schemes give the same vectors"
run "--batch 3: classes spanning batches" --classes $CN/pacs.txt --templates "$tmp/t5.txt" -- \
    --model "$d/hf" --classes $CN/pacs.txt --templates "$tmp/t5.txt" --batch 3
run "default template" --classes $CN/officehome.txt -- --model "$d/hf" --classes $CN/officehome.txt
run "DomainNet's 345 classes x 2 templates, --template twice" --classes $CN/domainnet.txt \
    --template "a photo of a {}." --template "itap of my {}." -- \
    --model "$d/hf" --classes $CN/domainnet.txt --template "a photo of a {}." --template "itap of my {}."
text-embed --model "$d/hf" --classes $CN/domainnet.txt --template "a photo of a {}." --template "itap of my {}." \
    --batch 1 --threads 1 -o "$tmp/b1.mp" && mpcmp --atol 1e-6 "$tmp/o.mp" "$tmp/b1.mp" >/dev/null &&
    pass "text-embed: --batch 1 --threads 1 gives the same vectors" ||
    failed "text-embed: --batch 1 --threads 1 gives the same vectors"
cp "$tmp/o.mp" "$tmp/first.mp"
text-embed --model "$d/hf" --classes $CN/domainnet.txt --template "a photo of a {}." --template "itap of my {}." \
    -o "$tmp/o.mp" && cmp -s "$tmp/o.mp" "$tmp/first.mp" &&
    pass "text-embed: a second run writes the same bytes" || failed "text-embed: a second run writes the same bytes"

# the stream as mpdump renders it (vectors, history and the weights' hash masked)
printf 'Alarm_Clock\nT-shirt\nThe_Eiffel_Tower\n' > "$tmp/three.txt"
text-embed --model "$d/hf" --classes "$tmp/three.txt" --template "a photo of a {}." --template "itap of my {}" |
    mpdump | sed -E 's/"vec": \[[^]]*\]/"vec": VEC/; s/"history": \[\[.*\]\], "history_versions": \[[^]]*\], "dim"/"history": H, "dim"/;
        s/-[0-9a-f]{16}"/-HASH"/' > "$tmp/dump.txt"
cat > "$tmp/want.txt" <<'WANT'
{"schema": "embedding", "version": 1, "history": H, "dim": 48, "dtype": "f32le", "space": "text:hf-HASH", "templates": ["a photo of a {}.", "itap of my {}"]}
{"id": "Alarm_Clock", "vec": VEC, "label": 0, "class": "Alarm_Clock", "text": "a photo of a Alarm Clock."}
{"id": "T-shirt", "vec": VEC, "label": 1, "class": "T-shirt", "text": "a photo of a T-shirt."}
{"id": "The_Eiffel_Tower", "vec": VEC, "label": 2, "class": "The_Eiffel_Tower", "text": "a photo of a The Eiffel Tower."}
{"end": true, "records": 3, "dropped": 0}
WANT
diff -u "$tmp/want.txt" "$tmp/dump.txt" && pass "text-embed: the stream's header, items and trailer (mpdump)" ||
    failed "text-embed: the stream's header, items and trailer (mpdump)"

# the tokenizer found beside a model file
cp "$d/openai.safetensors" "$BPE" "$tmp/"
run "tokenizer beside the model file" --classes $CN/vlcs.txt -- --model "$tmp/openai.safetensors" --classes $CN/vlcs.txt

# classes from a manifest, by label; unlabelled rows skipped
{
    printf 'id\tpath\tlabel\tclass\tdomain\tsplit\n'
    i=0
    for rep in 1 2; do
        for k in 4 0 2 1 3 6 5; do
            printf 'i%d\tx/%d.jpg\t%d\t%s\tphoto\ttrain\n' $i $i $k "$(sed -n "$((k + 1))p" $CN/pacs.txt)"
            i=$((i + 1))
        done
    done
    printf 'u1\tx/u.jpg\t\t\tphoto\ttest\n'
} > "$tmp/m.tsv"
run "classes from a manifest" --classes $CN/pacs.txt -- --model "$d/hf" --manifest "$tmp/m.tsv"

# over-long prompts: an error, or truncated with --truncate
long=$(for i in $(seq 90); do printf 'dog_'; done)cat
printf 'cat\n%s\n' "$long" > "$tmp/long.txt"
text-embed --model "$d/hf" --classes "$tmp/long.txt" -o "$tmp/long.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "longer than the context.*--truncate" "$tmp/err" && [ ! -e "$tmp/long.mp" ] &&
    pass "text-embed: an over-long prompt is an error without --truncate, and no output file" ||
    failed "text-embed: over-long prompt: status $rc, $(cat "$tmp/err")"
run "--truncate" --classes "$tmp/long.txt" --truncate -- --model "$d/hf" --classes "$tmp/long.txt" --truncate

# errors
expect() { # NAME STATUS PATTERN ARGS...
    local name=$1 want=$2 pat=$3
    shift 3
    text-embed "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc = "$want" ] && grep -q -- "$pat" "$tmp/err"; then
        pass "text-embed: $name (status $rc: $(head -n 1 "$tmp/err"))"
    else
        failed "text-embed: $name: status $rc, want $want and '$pat': $(head -c 300 "$tmp/err")"
    fi
}
printf 'dog\ncat\ndog\n' > "$tmp/dup.txt"
printf 'id\tpath\tlabel\tclass\na\tp\t0\tdog\nb\tp\t2\tcat\n' > "$tmp/gap.tsv"
printf 'id\tpath\tlabel\tclass\na\tp\t0\tdog\nb\tp\t0\tcat\n' > "$tmp/conflict.tsv"
cp "$d/openai.safetensors" "$tmp/alone.safetensors"
mkdir "$tmp/bare" && cp "$d/openai.safetensors" "$tmp/bare/"
expect "no --model is a usage error" 2 "usage:" --classes $CN/pacs.txt
expect "both --classes and --manifest is a usage error" 2 "usage:" --model "$d/hf" --classes $CN/pacs.txt --manifest "$tmp/m.tsv"
expect "a template without {} is a usage error" 2 "has no {}" --model "$d/hf" --classes $CN/pacs.txt --template "a photo"
expect "a missing class file is named" 1 "nope.txt" --model "$d/hf" --classes "$tmp/nope.txt"
expect "a repeated class name is an error" 1 "appears twice" --model "$d/hf" --classes "$tmp/dup.txt"
expect "a manifest with a label gap is an error" 1 "no row has label 1" --model "$d/hf" --manifest "$tmp/gap.tsv"
expect "a manifest with two names for one label is an error" 1 "label 0 is class 'cat' here but 'dog'" \
    --model "$d/hf" --manifest "$tmp/conflict.tsv"
# no tokenizer files with the model: the merges file shipped with the
# programs (share/), found from the executable; a copy of the program with
# nothing beside it asks for --bpe
run "no tokenizer with the model: the shipped merges file" --classes $CN/pacs.txt -- \
    --model "$tmp/bare/openai.safetensors" --classes $CN/pacs.txt
mkdir -p "$tmp/alone/bin" && cp bin/text-embed "$tmp/alone/bin/"
"$tmp/alone/bin/text-embed" --model "$tmp/bare/openai.safetensors" --classes $CN/pacs.txt >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "none installed; give --bpe" "$tmp/err" &&
    pass "text-embed: no tokenizer anywhere asks for --bpe ($(head -n 1 "$tmp/err"))" ||
    failed "text-embed: no tokenizer anywhere: status $rc, $(head -c 300 "$tmp/err")"
make -s install PREFIX="$tmp/inst" >/dev/null 2>"$tmp/err" &&
    "$tmp/inst/bin/text-embed" --model "$tmp/bare/openai.safetensors" --classes $CN/pacs.txt -o "$tmp/inst.mp" 2>>"$tmp/err" &&
    $ref compare "$d" "$tmp/inst.mp" "text-embed: installed, the merges file from PREFIX/share/vl2v = PyTorch" --bpe "$BPE" --classes $CN/pacs.txt ||
    failed "text-embed: installed in a prefix ($(head -c 300 "$tmp/err"))"
expect "a missing model is named" 1 "nomodel" --model "$tmp/nomodel" --bpe "$BPE" --classes $CN/pacs.txt

# class names on standard input
text-embed --model "$d/hf" --classes - --templates "$tmp/t5.txt" < $CN/pacs.txt > "$tmp/stdin.mp" &&
$PYTHON - "$tmp/hf.mp" "$tmp/stdin.mp" <<'PY' && pass "text-embed: --classes - reads standard input" ||
import sys, msgpack
a, b = [list(msgpack.Unpacker(open(p, "rb"), raw=False))[1:] for p in sys.argv[1:]]
sys.exit(0 if a == b else 1)
PY
    failed "text-embed: --classes - reads standard input"

# the man page: --help's usage is its SYNOPSIS; mandoc finds nothing to warn about
syn=$(mandoc -Tascii -O width=250 man/text-embed.1 2>/dev/null | col -bx |
    awk '/^SYNOPSIS/ {on = 1; next} /^[A-Z]/ {on = 0} on' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
help=$(text-embed --help | awk '/^  -/ { exit } { print }' | sed 's/^usage: //' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
[ -n "$syn" ] && [ "$syn" = "$help" ] && pass "text-embed: --help's usage is the SYNOPSIS of man/text-embed.1" ||
    failed "text-embed: --help '$help' differs from the SYNOPSIS '$syn'"
mandoc -Tlint -W warning man/text-embed.1 >"$tmp/lint" 2>&1 && pass "text-embed: mandoc -Tlint -W warning man/text-embed.1" ||
    failed "text-embed: mandoc -Tlint man/text-embed.1: $(cat "$tmp/lint")"

# the real ViT-B/16 text tower (12 layers, width 512, 8 heads)
d=$tmp/vitb16
if $ref make --text vitb16 --bpe "$BPE" --out "$d"; then
    head -n 3 tests/ref/imagenet_templates.txt > "$tmp/t3.txt"
    run "ViT-B/16 text tower, PACS x 3 templates" --classes $CN/pacs.txt --templates "$tmp/t3.txt" -- \
        --model "$d/hf" --classes $CN/pacs.txt --templates "$tmp/t3.txt" --threads 2
else
    failed "text-embed: ViT-B/16 reference model"
fi
exit $fail
