/* tok: CLIP's byte-level BPE tokenizer, as OpenAI's simple_tokenizer.py and
 * transformers' CLIPTokenizer: text clean-up, lower-casing, the
 * pre-tokenisation pattern
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (case-insensitive, as OpenAI compiles it), the byte-to-unicode map, merges
 * by rank with "</w>" word ends, and the start / end tokens around each text.
 *
 * Clean-up, in order: ftfy.fix_text as OpenAI runs it (ftfy 6, default
 * settings) except its mojibake repair: line by line, until nothing
 * changes, HTML entities decoded (unless a line so far held '<'), C1
 * controls read as windows-1252, Latin ligatures split, full-width forms
 * narrowed, curly quotes straightened, line breaks unified, terminal escapes
 * and control characters removed, NFC; then html.unescape twice (Python's
 * rules: HTML5 names, numeric references); strip; whitespace runs to one
 * space; strip; Python's str.lower() (final sigma included). ftfy's
 * fix_encoding (a heuristic that re-decodes text it judges to be mojibake,
 * "Ã©" -> "é") is not done: such text gives other tokens than OpenAI's
 * tokenizer. (transformers' CLIPTokenizer with ftfy skips the html.unescape
 * step: it differs from OpenAI's, and from this, on the HTML references that
 * ftfy leaves, such as "&amp" without ';'.) The Unicode tables are generated
 * (lib/tok_unicode.c, tests/ref/tok_unicode_gen.py) from Python 3.11
 * (Unicode 14) and the regex module, the libraries behind simple_tokenizer.
 *
 * A tokenizer caches the BPE of each word it has seen, so one tok must not be
 * used by two threads at once. */
#ifndef VL_TOK_H
#define VL_TOK_H

#include <stddef.h>
#include <stdint.h>

/* CLIP's text context */
#define TOK_CONTEXT 77

typedef struct tok tok;

/* path: a directory holding vocab.json and merges.txt (a Hugging Face CLIP
 * model directory), or a merges file such as bpe_simple_vocab_16e6.txt.gz
 * (gzip or plain), from which the vocabulary is built as simple_tokenizer
 * does: the 256 byte symbols, the same with "</w>", one symbol per merge,
 * then <|startoftext|> and <|endoftext|>. As both originals, the first line
 * of a merges file is a header and at most 48,894 merges are read.
 * Returns 0 with *out set, or -1 with err naming the file and line. */
int tok_load(tok **out, const char *path, char *err);
void tok_free(tok *t);

/* The name of CLIP's merges file, as OpenAI ships it. */
#define TOK_BPE_FILE "bpe_simple_vocab_16e6.txt.gz"

/* Where the tokenizer of a model is, for tok_load, in this order: bpe when
 * given; else, in the model's directory (model itself when it is one, else
 * the directory of the model file), vocab.json with merges.txt (the
 * directory is returned), else TOK_BPE_FILE there; else fallback (the
 * merges file shipped with the programs; may be NULL). Returns a malloc'ed
 * path, or NULL with err naming the model and what was looked for. */
char *tok_locate(const char *model, const char *bpe, const char *fallback, char *err);

int32_t tok_sot(const tok *t);        /* <|startoftext|>, 49406 in CLIP */
int32_t tok_eot(const tok *t);        /* <|endoftext|>, 49407 in CLIP */
int32_t tok_vocab_size(const tok *t); /* largest id + 1 */

/* A growable id array; release v with free(). */
typedef struct {
    int32_t *v;
    size_t n, cap;
} tok_ids;

/* The clean-up alone: text[0..len) (UTF-8) to a new NUL-terminated UTF-8
 * string in *out (caller frees), its length in *outlen. -1 with err on
 * invalid UTF-8. */
int tok_clean(const char *text, size_t len, char **out, size_t *outlen, char *err);

/* Appends the BPE ids of text[0..len) to ids, without start or end token.
 * Returns 0, or -1 with err (invalid UTF-8). */
int tok_encode(tok *t, const char *text, size_t len, tok_ids *ids, char *err);

/* CLIP's tokenize(): out[0..ctx) = start token, the ids, end token, then 0s.
 * A text of more than ctx - 2 ids is an error unless truncate is set, when
 * the first ctx ids are kept and the last replaced by the end token.
 * Returns the number of non-padding tokens, or -1 with err. */
int tok_tokenize(tok *t, const char *text, size_t len, int ctx, int truncate, int32_t *out, char *err);

#endif
