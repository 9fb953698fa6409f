/* tok_unicode: the generated tables behind lib/tok.c (see
 * tests/ref/tok_unicode_gen.py, which writes lib/tok_unicode.c). Internal to
 * the tokenizer. */
#ifndef VL_TOK_UNICODE_H
#define VL_TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Per-code-point flags, as runs: tok_u_runs[i] = first << 8 | flags, sorted,
 * the first run starting at 0; a run lasts until the next one starts. */
enum {
    TOK_U_CLS = 3,        /* pre-tokenisation class under IGNORECASE: */
    TOK_U_SKIP = 0,       /*   matches no alternative (whitespace, U+0345) */
    TOK_U_LETTER = 1,     /*   [\p{L}] */
    TOK_U_NUMBER = 2,     /*   [\p{N}] */
    TOK_U_OTHER = 3,      /*   [^\s\p{L}\p{N}] */
    TOK_U_RESPACE = 4,    /* the regex module's \s */
    TOK_U_PYSPACE = 8,    /* Python's str.isspace() (what strip() removes) */
    TOK_U_CASED = 16,     /* cased letter (final-sigma rule) */
    TOK_U_IGNORABLE = 32, /* case-ignorable (final-sigma rule) */
    TOK_U_DECIMAL = 64,   /* str.isdecimal(): \d of Python's re */
};
extern const uint32_t tok_u_runs[];
extern const size_t tok_u_nruns;
extern const uint8_t tok_u_ascii[128]; /* the flags of code points 0..127 */

/* str.lower() for every code point it changes, but U+03A3 (context-dependent) */
typedef struct {
    uint32_t cp, lo0, lo1; /* lo1 = 0 when the lower case is one code point */
} tok_u_lower;
extern const tok_u_lower tok_u_lowers[];
extern const size_t tok_u_nlowers;

/* non-ASCII code points that match an ASCII letter under IGNORECASE */
typedef struct {
    uint32_t cp;
    char ascii;
} tok_u_fold;
extern const tok_u_fold tok_u_folds[];
extern const size_t tok_u_nfolds;

/* a code point and its replacement (UTF-8, maybe empty), sorted by cp */
typedef struct {
    uint32_t cp;
    const char *to;
} tok_u_subst;
/* ftfy's fix_c1_controls, fix_latin_ligatures, fix_character_width and
 * uncurl_quotes, applied once, for every code point they change */
extern const tok_u_subst tok_u_ftfy[];
extern const size_t tok_u_nftfy;
/* what ftfy's remove_control_chars deletes, sorted */
extern const uint32_t tok_u_controls[];
extern const size_t tok_u_ncontrols;
extern const tok_u_subst tok_u_invalid_charrefs[];
extern const size_t tok_u_ninvalid_charrefs;

/* NFC: the full canonical decomposition (NFD) of each code point that has
 * one, Hangul syllables excepted (they are computed); sorted by cp */
typedef struct {
    uint32_t cp;
    uint8_t n;
    uint32_t d[4];
} tok_u_decomp;
extern const tok_u_decomp tok_u_decomps[];
extern const size_t tok_u_ndecomps;
/* canonical combining classes as runs: first << 8 | class, sorted */
extern const uint32_t tok_u_ccc_runs[];
extern const size_t tok_u_nccc_runs;
/* primary composites: a + b -> c, sorted by (a, b); Hangul computed */
typedef struct {
    uint32_t a, b, c;
} tok_u_comp;
extern const tok_u_comp tok_u_comps[];
extern const size_t tok_u_ncomps;

/* HTML5 named character references (names with and without ';'), sorted by name */
typedef struct {
    const char *name, *value;
} tok_u_entity;
extern const tok_u_entity tok_u_entities[];
extern const size_t tok_u_nentities;
/* ftfy's entities: "&name;" of HTML5, and upper-case spellings, sorted */
extern const tok_u_entity tok_u_ftfy_entities[];
extern const size_t tok_u_nftfy_entities;

/* numeric references that html.unescape drops, sorted */
extern const uint32_t tok_u_invalid_codepoints[];
extern const size_t tok_u_ninvalid_codepoints;

#endif
