"""Reference CLIP tokenizer: a port of OpenAI's simple_tokenizer.py (which
transformers' CLIPTokenizer matches), used to check lib/tok.c.

simple_tokenizer cleans text with ftfy.fix_text, which Debian 12 does not
package: this file carries a port of fix_text without its mojibake repair
(fix_encoding, a heuristic), as lib/tok.h documents. Then, as
simple_tokenizer: html.unescape twice, strip, whitespace runs to one space,
strip, lower-case.

Usage as a program:
  tok_ref.py MERGES_GZ < strings.jsonl > ids.txt
Each input line is a JSON string; each output line is its BPE ids (no start
or end token) separated by spaces. With TOK_TIME set in the environment, the
seconds spent on the lines (after loading) go to stderr."""
import gzip
import html
import json
import os
import sys
import time
import unicodedata
from functools import lru_cache

import html.entities
import re as std_re

import regex as re


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    pairs = set()
    prev = word[0]
    for ch in word[1:]:
        pairs.add((prev, ch))
        prev = ch
    return pairs


# --- ftfy.fix_text without its mojibake repair ----------------------------
# A port of ftfy 6's fix_text with the default configuration, leaving out
# fix_encoding (the heuristic repair of text decoded with the wrong codec):
# the text is cut into lines; HTML entities are decoded unless a line so far
# held '<'; then per line, until nothing changes: unescape_html,
# fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes,
# fix_line_breaks, remove_terminal_escapes, remove_control_chars, NFC.

LIGATURES = {
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž",
    "ǆ": "dž", "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj", "ﬀ": "ff",
    "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
}
LIGATURE_MAP = {ord(k): v for k, v in LIGATURES.items()}


def _width_map():
    m = {0x3000: " "}
    for i in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(i))
        if alt != chr(i):
            m[i] = alt
    return m


WIDTH_MAP = _width_map()
CONTROL_MAP = {i: None for i in list(range(0x00, 0x09)) + [0x0B] + list(range(0x0E, 0x20)) + [0x7F] +
               list(range(0x206A, 0x2070)) + [0xFEFF] + list(range(0xFFF9, 0xFFFD))}
C1_RE = re.compile(r"[\x80-\x9f]")
SINGLE_QUOTE_RE = re.compile("[\u02bc\u2018-\u201b]")
DOUBLE_QUOTE_RE = re.compile("[\u201c-\u201f]")
# ftfy uses the standard library's re here: \d is any Unicode decimal digit
ANSI_RE = std_re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
FTFY_ENTITY_RE = std_re.compile(r"&#?[0-9A-Za-z]{1,24};")
MAX_SEGMENT = 1000000


def _ftfy_entities():
    """HTML5 names with ';', and the upper-case spelling of the lower-case
    names that html.unescape leaves alone (&NTILDE; is Ñ)"""
    e = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            e["&" + name] = char
            if name == name.lower():
                up = "&" + name.upper()
                if html.unescape(up) == up:
                    e[up] = char.upper()
    return e


FTFY_ENTITIES = _ftfy_entities()


def _entity(m):
    t = m.group(0)
    if t in FTFY_ENTITIES:
        return FTFY_ENTITIES[t]
    if t.startswith("&#"):
        u = html.unescape(t)
        return t if ";" in u else u
    return t


def _c1(m):
    b = bytes([ord(m.group(0))])
    try:
        return b.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes windows-1252 leaves undefined
        return b.decode("latin-1")


def char_fixes(text):
    """fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes"""
    text = C1_RE.sub(_c1, text)
    text = text.translate(LIGATURE_MAP)
    text = text.translate(WIDTH_MAP)
    text = SINGLE_QUOTE_RE.sub("'", DOUBLE_QUOTE_RE.sub('"', text))
    return text


def fix_segment(text, entities):
    while True:
        orig = text
        if entities:
            text = FTFY_ENTITY_RE.sub(_entity, text)
        text = char_fixes(text)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n") \
            .replace("\u2029", "\n").replace("\x85", "\n")
        text = ANSI_RE.sub("", text)
        text = text.translate(CONTROL_MAP)
        text = unicodedata.normalize("NFC", text)
        if text == orig:
            return text


def ftfy_lite(text):
    out, pos, entities = [], 0, True
    while pos < len(text):
        end = text.find("\n", pos) + 1
        if end == 0:
            end = len(text)
        end = min(end, pos + MAX_SEGMENT)
        seg = text[pos:end]
        if "<" in seg:
            entities = False
        out.append(fix_segment(seg, entities))
        pos = end
    return "".join(out)


def basic_clean(text):
    text = ftfy_lite(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    text = re.sub(r"\s+", " ", text)
    return text.strip()


PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class SimpleTokenizer:
    def __init__(self, bpe_path):
        self.byte_encoder = bytes_to_unicode()
        merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = merges[1:49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab]
        for merge in merges:
            vocab.append("".join(merge))
        vocab.extend(["<|startoftext|>", "<|endoftext|>"])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = re.compile(PATTERN, re.IGNORECASE)
        self.sot = self.encoder["<|startoftext|>"]
        self.eot = self.encoder["<|endoftext|>"]

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in re.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return bpe_tokens

    def tokenize(self, text, context_length=77, truncate=False):
        tokens = [self.sot] + self.encode(text) + [self.eot]
        if len(tokens) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {context_length}")
            tokens = tokens[:context_length]
            tokens[-1] = self.eot
        return tokens + [0] * (context_length - len(tokens))


def main():
    tok = SimpleTokenizer(sys.argv[1])
    t0 = time.perf_counter()
    out = []
    for line in sys.stdin:
        out.append(" ".join(map(str, tok.encode(json.loads(line)))))
    sys.stdout.write("\n".join(out) + ("\n" if out else ""))
    sys.stdout.flush()
    if os.environ.get("TOK_TIME"):
        sys.stderr.write("%.6f\n" % (time.perf_counter() - t0))


if __name__ == "__main__":
    main()
