"""The tokenizer parity corpus, as JSON lines on stdout: the class names of
PACS, VLCS, OfficeHome, TerraIncognita and DomainNet (raw and as prompts), the
80 ImageNet prompt templates of CLIP, and hand-picked and random strings that
reach every branch of the clean-up and the pre-tokenisation: punctuation,
digits, accents, non-Latin scripts, emoji, HTML entities, control and
full-width characters, decomposed text (NFC), long and empty strings.
With --all-code-points: lines that hold every code point of planes 0-3 and 14
instead."""
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))


def lines(path):
    with open(os.path.join(HERE, path), encoding="utf-8") as f:
        return [ln.rstrip("\n") for ln in f if ln.strip()]


EDGE = [
    "", " ", "   \t\n  ", "\n", "a", "A", "I", "'", "''", "'s", "it's", "IT'S", "don't", "we're", "they've",
    "i'm", "you'll", "he'd", "o'clock", "rock 'n' roll", "'tis", "'''s", "can't won't shan't",
    "'\u017f", "x'\u017f", "<|startoftext|>", "<|endoftext|>", "a<|endoftext|>b", "!<|endoftext|>",
    "<|ENDOFTEXT|>", "<|\u017ftartoftext|>", "<|startoftext|><|endoftext|>", "<|endoftext", "<|",
    "hello world", "Hello, World!", "HELLO   WORLD", "hello\tworld\nnew line\r\nwindows",
    "...", "!!!???", "a.b.c", "e.g.", "U.S.A.", "#hashtag @mention", "http://example.com/a?b=c&d=e",
    "user@example.org", "C++ and C#", "50% off!", "$100.00", "€20", "£5", "¥1000", "1+1=2", "(a)[b]{c}<d>",
    "\\backslash/slash|pipe", "~tilde`backtick^caret", "a-b_c", "snake_case_name", "camelCaseName",
    "---", "***", "___", "\"quoted\"", "'single'", "«guillemets»", "—em dash– en dash",
    "0", "7", "42", "123456789", "3.14159", "1,000,000", "2024-01-01", "12:30", "1st 2nd 3rd 4th",
    "٣ ٤ ٥", "१२३", "Ⅻ", "½ ¾", "²³", "①②", "๑๒๓", "〇一二三",
    "café", "naïve", "résumé", "Ångström", "Zürich", "São Paulo", "Kraków", "Łódź", "İstanbul", "ıi",
    "straße", "STRASSE", "ﬁne ﬂower ﬀ ﬃ ﬄ ﬅ ﬆ", "ĳs Ĳs", "ǅ ǈ ǋ ǲ", "ŉ", "cafe\u0301", "e\u0301\u0301",
    "Ελληνικά", "ΟΔΟΣ", "ΟΔΟΣ ΟΔΟΣ.", "Σ", "ΑΣ", "ΑΣΑ", "Α.Σ", "ΑʹΣ", "Α\u0345Σ", "α\u0345β",
    "Русский язык", "УКРАЇНА", "Ѐ ѐ", "עברית", "العربية", "हिन्दी", "বাংলা", "தமிழ்", "ไทย", "ລາວ",
    "ქართული", "Հայերեն", "አማርኛ", "中文字符", "日本語のテキスト", "カタカナ", "ｶﾀｶﾅ", "한국어 텍스트",
    "ᚠᚢᚦ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝐁𝐨𝐥𝐝", "𝟘𝟙𝟚", "ⓐⓑⓒ", "ⒶⒷⒸ", "🅰🅱",
    "😀", "😀😃😄", "dog 🐶", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "❤️", "✔︎", "©®™", "♠♥♦♣", "→←↑↓", "∑∫√∞",
    "&amp;", "&amp;amp;", "&amp;amp;amp;", "&lt;b&gt;bold&lt;/b&gt;", "&quot;x&quot;", "&#39;s", "&#x27;t",
    "&nbsp;a&nbsp;b", "&copy; 2024", "&eacute;t&eacute;", "&notit;", "&notin;", "&amp", "&ampfoo", "&#65",
    "&#x41", "&#xZZ;", "&#;", "&;", "& ", "&#0;", "&#128;", "&#150;", "&#x110000;", "&#xD800;",
    "&#99999999999999999999;", "&#1;", "&#65534;", "&#x1F600;", "&rsquo;", "&NotNestedGreaterGreater;",
    "&thinsp;a", "&ThinSpace;", "&abcdefghijklmnopqrstuvwxyzabcdefghijkl;", "&é;", "&amé;",
    "&NTILDE; &Ntilde; &nTILDE; &SZLIG;", "&AMP;", "&#X41;", "&#65a;", "&#x27;s&#X27;S",
    "a<b &amp; c", "line &amp; one\n<b>two &amp;</b>\nthree &amp;", "first &lt;\r\nsecond &gt;",
    "&abcdefghijklmnopqrstuvwxy;", "&abcdefghijklmnopqrstuvwx;", "&&amp;;", "&amp;#65;", "&#38;amp;",
    "\x1b[1;31mbold\x1b[0m", "\x1b[\u0663m", "\x1b[m\x1b[", "\x1b[12", "\x1b]0;title\x07",
    "a\r\nb\rc\u0085d", "\x85\x96", "&#x85;", "&#133;", "&#8217;", "\u00e9&#x301;", "e&#x301;",
    "don\u2019t", "\u2018quoted\u2019", "\u201cdouble\u201d", "\u201a\u201b\u201e\u201f", "\u02bcokina",
    "\uff21\uff22\uff23\uff41", "\uff11\uff12\uff13", "\u3000wide\u3000space", "\uff0e\uff01", "\uffe1\uffe5",
    "\x80\x85\x91x\x92\x93y\x94\x96\x97\x99\x9f", "\x81\x8d\x8f\x90\x9d",
    "a\x00b", "a\x01b\x02c", "a\x0bb", "a\x0cb", "a\x1cb\x1dc\x1ed\x1ff", "a\x7fb", "a\u200bb", "a\u200db",
    "a\u2028b\u2029c", "a\u00a0b", "a\u2003b\u2009c", "a\u206ab", "a\ufeffb", "\ufeffbom", "a\ufff9b\ufffcc",
    "a\ufffdb", "tab\there", "\x1b[31mred\x1b[0m", "a\u0345", "\u0345", "x\u0300y", "\u0300",
    "TITLE Case Words", "MiXeD cAsE", "ǅemal", "ẞ", "Ꭰ", "ꭰ", "Ⓐ",
    "a" * 300, "ab" * 200, "pneumonoultramicroscopicsilicovolcanoconiosis", "x" * 3000,
    " ".join(["word"] * 100), "the quick brown fox jumps over the lazy dog " * 10,
    "1234567890" * 20, "!" * 500, "é" * 200, "日本" * 100, "😀" * 60,
]


def random_strings(rng, n):
    blocks = [(0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x2100, 0x21FF), (0x3000, 0x30FF), (0x4E00, 0x4E80),
              (0xAC00, 0xAC80), (0xFB00, 0xFB4F), (0xFE00, 0xFE6F), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF),
              (0x1D400, 0x1D7FF), (0x10400, 0x1044F)]
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        chars = []
        for _ in range(k):
            r = rng.random()
            if r < 0.35:
                chars.append(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ''.,;&#"))
            elif r < 0.85:
                lo, hi = rng.choice(blocks)
                chars.append(chr(rng.randint(lo, hi)))
            else:
                c = rng.randint(0, 0x10FFFF)
                while 0xD800 <= c < 0xE000:
                    c = rng.randint(0, 0x10FFFF)
                chars.append(chr(c))
        out.append("".join(chars))
    return out


def nfc_strings(rng):
    """decomposed, reordered and Hangul text: what NFC composes"""
    out = []
    for lo, hi in ((0xC0, 0x24F), (0x1E00, 0x1EFF), (0x1F00, 0x1FFF), (0x400, 0x4FF)):
        chars = [chr(c) for c in range(lo, hi + 1)]
        for i in range(0, len(chars), 12):
            out.append(unicodedata.normalize("NFD", "".join(chars[i:i + 12])))
    marks = [c for c in range(0x300, 0x370)] + [c for c in range(0x591, 0x5C8)] + \
        [c for c in range(0x64B, 0x660)] + [0x93C, 0x94D, 0x1DC0, 0x20D0, 0x302A, 0x3099, 0x309A]
    bases = "aeiouAEIOUcnsyzgkhwx" + "αεηιοωρΑΩ" + "аеиоуАЕ" + "אבגש" + "かきくはひカ" + "ক"
    for _ in range(150):
        w = []
        for _ in range(rng.randint(1, 6)):
            w.append(rng.choice(bases) + "".join(chr(rng.choice(marks)) for _ in range(rng.randint(0, 4))))
        out.append("".join(w))
    for _ in range(60):  # conjoining jamo, L V (T), and syllables followed by T
        w = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.5:
                w.append(chr(0x1100 + rng.randint(0, 18)) + chr(0x1161 + rng.randint(0, 20)) +
                         (chr(0x11A8 + rng.randint(0, 26)) if rng.random() < 0.5 else ""))
            elif r < 0.8:
                w.append(chr(0xAC00 + 28 * rng.randint(0, 398)) + chr(0x11A7 + rng.randint(0, 27)))
            else:
                w.append(chr(rng.choice([0x1100, 0x1161, 0x11A8, 0x11A7, 0x1160, 0x115F, 0x3131])))
        out.append("".join(w))
    out += ["\u212b \u2126 \u212a", "\u0958\u0959", "a\u0301\u0301", "a\u0323\u0302 a\u0302\u0323",
            "\u0b47\u0b3e \u0b47\u0b56", "\u0dd9\u0dcf\u0dca", "\u1025\u102e", "e\u0301\u0327",
            "\u0344 \u0340\u0341 \u0374 \u037e \u0387", "\u1f71\u1fbb", "\u0301a", "\u0301",
            "\uf900\uf9ff\ufa2d", "\U0002f800\U0002fa1d", "\u0f73\u0f75\u0f81", "\u0345\u0301",
            "\u00c5\u030a", "A\u030a\u0301", "\u0041\u0308\u0304", "\u0e40\u0e49\u0e32"]
    return out


def corpus():
    names = {d: lines("classnames/%s.txt" % d) for d in
             ("pacs", "vlcs", "officehome", "terraincognita", "domainnet")}
    templates = lines("imagenet_templates.txt")
    out = []
    for d in names:
        out += names[d]
        out += [n.replace("_", " ") for n in names[d]]
    out += templates
    for t in templates:
        for n in names["pacs"]:
            out.append(t.format(n))
    for n in names["domainnet"] + names["officehome"] + names["terraincognita"] + names["vlcs"]:
        out.append("a photo of a {}.".format(n.replace("_", " ")))
    out += EDGE
    out += random_strings(random.Random(1234), 300)
    out += nfc_strings(random.Random(99))
    return out


def all_code_points():
    """every code point of planes 0-3 and 14, each between letters, beside a
    digit and a symbol, 48 to a line: any code point the two tokenizers
    classify, clean or lower-case differently changes a line's tokens"""
    cps = [c for c in list(range(0x40000)) + list(range(0xE0000, 0xF0000)) if not 0xD800 <= c < 0xE000]
    out = []
    for i in range(0, len(cps), 48):
        out.append(" ".join("a%sa%s1!" % (chr(c), chr(c)) for c in cps[i:i + 48]))
    return out


if __name__ == "__main__":
    for s in (all_code_points() if sys.argv[1:] == ["--all-code-points"] else corpus()):
        sys.stdout.write(json.dumps(s) + "\n")
