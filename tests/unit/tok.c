/* tok: unit tests of the CLIP tokenizer on the real merges file (known token
 * ids, context handling, clean-up, errors), and a driver for
 * tests/ref/tok.sh:
 *   tok --encode PATH < strings.jsonl   one line of BPE ids per JSON string
 *   tok --clean < strings.jsonl         one JSON line of cleaned text per string
 * With TOK_TIME set in the environment, the seconds spent on the lines (after
 * loading) go to stderr. */
#include "check.h"
#include "json.h"
#include "tok.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[VL_ERRLEN];

/* runs over stdin's JSON-string lines; mode 0 ids, 1 clean-up */
static int driver(tok *t, int mode)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    tok_ids ids = {0};
    json_buf out = {0};
    double t0 = vl_now();
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json *j = json_parse(line, (size_t)n, err);
        if (!j || j->type != JSON_STR) {
            fprintf(stderr, "tok: bad input line: %s\n", j ? "not a string" : err);
            return 1;
        }
        if (mode == 0) {
            ids.n = 0;
            if (tok_encode(t, j->s, j->slen, &ids, err) != 0) {
                printf("ERROR %s\n", err);
            } else {
                for (size_t i = 0; i < ids.n; i++) printf(i ? " %d" : "%d", ids.v[i]);
                printf("\n");
            }
        } else {
            char *c;
            size_t cn;
            if (tok_clean(j->s, j->slen, &c, &cn, err) != 0) {
                printf("ERROR %s\n", err);
            } else {
                out.len = 0;
                json_buf_str(&out, c, cn);
                printf("%.*s\n", (int)out.len, out.p);
                free(c);
            }
        }
        json_free(j);
    }
    int rc = fflush(stdout) == 0 ? 0 : 1;
    if (getenv("TOK_TIME")) fprintf(stderr, "%.6f\n", vl_now() - t0);
    free(line);
    free(ids.v);
    free(out.p);
    return rc;
}

static int same(const int32_t *a, const int32_t *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static int encodes_to(tok *t, const char *text, const int32_t *want, size_t n)
{
    tok_ids ids = {0};
    int ok = tok_encode(t, text, strlen(text), &ids, err) == 0 && ids.n == n && same(ids.v, want, (int)n);
    free(ids.v);
    return ok;
}

static int cleans_to(const char *text, const char *want)
{
    char *c;
    size_t n;
    if (tok_clean(text, strlen(text), &c, &n, err) != 0) return 0;
    int ok = n == strlen(want) && memcmp(c, want, n) == 0;
    if (!ok) fprintf(stderr, "clean(%s) = [%s], want [%s]\n", text, c, want);
    free(c);
    return ok;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *shared = getenv("SHARED");
    char bpe[4096];
    snprintf(bpe, sizeof bpe, "%s/data/clip/bpe_simple_vocab_16e6.txt.gz", shared ? shared : "../shared");
    if (argc == 3 && strcmp(argv[1], "--encode") == 0) {
        tok *t;
        if (tok_load(&t, argv[2], err) != 0) {
            fprintf(stderr, "tok: %s\n", err);
            return 1;
        }
        int rc = driver(t, 0);
        tok_free(t);
        return rc;
    }
    if (argc == 2 && strcmp(argv[1], "--clean") == 0) return driver(NULL, 1);

    tok *t = NULL;
    CHECK(tok_load(&t, bpe, err) == 0, "loads %s", bpe);
    if (!t) {
        printf("FAIL: no tokenizer: %s\n", err);
        return 1;
    }
    CHECK(tok_sot(t) == 49406 && tok_eot(t) == 49407 && tok_vocab_size(t) == 49408,
          "vocabulary of 49408 with <|startoftext|> 49406 and <|endoftext|> 49407");

    int32_t out[TOK_CONTEXT];
    static const int32_t dog[] = {49406, 320, 1125, 539, 320, 1929, 269, 49407};
    int n = tok_tokenize(t, "a photo of a dog.", 17, TOK_CONTEXT, 0, out, err);
    CHECK(n == 8 && same(out, dog, 8) && out[8] == 0 && out[76] == 0,
          "'a photo of a dog.' -> 49406 320 1125 539 320 1929 269 49407, zero padded");
    n = tok_tokenize(t, "A   Photo\tof a DOG.  ", 21, TOK_CONTEXT, 0, out, err);
    CHECK(n == 8 && same(out, dog, 8), "case and white space do not change the tokens");
    static const int32_t empty[] = {49406, 49407, 0};
    n = tok_tokenize(t, "", 0, TOK_CONTEXT, 0, out, err);
    CHECK(n == 2 && same(out, empty, 3), "the empty text is start and end tokens");

    /* "dog " * 75 is 75 ids: 77 with start and end, the most that fits */
    char longtext[1024] = "";
    for (int i = 0; i < 75; i++) strcat(longtext, "dog ");
    n = tok_tokenize(t, longtext, strlen(longtext), TOK_CONTEXT, 0, out, err);
    CHECK(n == 77 && out[76] == 49407 && out[75] == 1929, "75 words fill the context exactly");
    strcat(longtext, "cat");
    n = tok_tokenize(t, longtext, strlen(longtext), TOK_CONTEXT, 0, out, err);
    CHECK(n == -1 && strstr(err, "longer than the context"), "76 words are an error without truncation (%s)", err);
    n = tok_tokenize(t, longtext, strlen(longtext), TOK_CONTEXT, 1, out, err);
    CHECK(n == 77 && out[0] == 49406 && out[75] == 1929 && out[76] == 49407,
          "with truncation the end token takes the last position");

    static const int32_t eot[] = {1929, 49407, 2368};
    CHECK(encodes_to(t, "dog<|endoftext|>cat", eot, 3), "a literal <|endoftext|> is the end token");
    CHECK(cleans_to("  Don\xe2\x80\x99t &amp;amp; &lt;b&gt;  ", "don't & <b>"),
          "clean-up: quotes, HTML entities twice, spaces, lower case");
    CHECK(cleans_to("&notit; &#x41;&#66 &#0; &#128;", "\xc2\xacit; ab \xef\xbf\xbd \xe2\x82\xac"),
          "clean-up: html.unescape's prefix names and numeric rules");
    CHECK(cleans_to("\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xcf\x83"),
          "clean-up: final sigma as Python's lower()");
    CHECK(cleans_to("\xef\xbc\xa1\xef\xbc\xa2 \xef\xac\x81", "ab fi"), "clean-up: full width and ligatures");

    tok_ids ids = {0};
    CHECK(tok_encode(t, "caf\xc3", 4, &ids, err) == -1 && strstr(err, "invalid UTF-8 at byte 3"),
          "invalid UTF-8 is an error naming the byte (%s)", err);
    CHECK(tok_encode(t, "\xed\xa0\x80", 3, &ids, err) == -1, "an encoded surrogate is invalid UTF-8");
    free(ids.v);

    /* errors of the files */
    char dir[] = "/tmp/vl2v-tok-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temporary directory");
    char path[256], path2[256];
    tok *bad;
    snprintf(path, sizeof path, "%s/none.txt.gz", dir);
    CHECK(tok_load(&bad, path, err) == -1 && strstr(err, "none.txt.gz"), "a missing file is an error naming it");
    snprintf(path, sizeof path, "%s/m.txt", dir);
    write_file(path, "#version: 0.2\nh e\nhe llo extra\n");
    CHECK(tok_load(&bad, path, err) == -1 && strstr(err, "line 3"), "a bad merges line is an error naming it (%s)",
          err);
    /* a directory without vocab.json */
    snprintf(path2, sizeof path2, "%s/merges.txt", dir);
    write_file(path2, "#version: 0.2\nh e\n");
    CHECK(tok_load(&bad, dir, err) == -1 && strstr(err, "vocab.json"), "a directory needs vocab.json (%s)", err);
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    write_file(path, "{\"h\": 0}");
    CHECK(tok_load(&bad, dir, err) == -1 && strstr(err, "no token for byte"), "vocab.json must hold every byte (%s)",
          err);
    unlink(path);
    unlink(path2);
    snprintf(path, sizeof path, "%s/m.txt", dir);
    unlink(path);

    /* tok_locate's order: --bpe, the model's directory (vocab.json with
     * merges.txt, then the merges file), then the fallback */
    char model[300], *got;
    snprintf(model, sizeof model, "%s/w.safetensors", dir);
    write_file(model, "x");
    got = tok_locate(model, "given.gz", "shipped.gz", err);
    CHECK(got && strcmp(got, "given.gz") == 0, "tok_locate: --bpe first (%s)", got ? got : err);
    free(got);
    got = tok_locate(model, NULL, "shipped.gz", err);
    CHECK(got && strcmp(got, "shipped.gz") == 0, "tok_locate: nothing beside the model: the fallback (%s)",
          got ? got : err);
    free(got);
    got = tok_locate(model, NULL, NULL, err);
    CHECK(!got && strstr(err, "w.safetensors") && strstr(err, "give --bpe"),
          "tok_locate: nothing anywhere is an error naming the model (%s)", err);
    snprintf(path, sizeof path, "%s/" TOK_BPE_FILE, dir);
    write_file(path, "#version: 0.2\n");
    got = tok_locate(model, NULL, "shipped.gz", err);
    CHECK(got && strcmp(got, path) == 0, "tok_locate: the merges file beside a model file (%s)", got ? got : err);
    free(got);
    got = tok_locate(dir, NULL, "shipped.gz", err);
    CHECK(got && strcmp(got, path) == 0, "tok_locate: the merges file in a model directory (%s)", got ? got : err);
    free(got);
    snprintf(path2, sizeof path2, "%s/vocab.json", dir);
    write_file(path2, "{}");
    char merges[300];
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    write_file(merges, "#version: 0.2\n");
    got = tok_locate(dir, NULL, "shipped.gz", err);
    CHECK(got && strcmp(got, dir) == 0, "tok_locate: vocab.json + merges.txt before the merges file (%s)",
          got ? got : err);
    free(got);
    unlink(path), unlink(path2), unlink(merges), unlink(model);
    rmdir(dir);

    tok_free(t);
    CHECK_EXIT();
}
