/* Unit tests of lib/json: values of every type, escapes and surrogate pairs,
 * integers versus floats, malformed and hostile text, and the string writer
 * (whose output must parse back to the same bytes). */
#include "check.h"
#include "json.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static json *parse(const char *s, char *err) {
    return json_parse(s, strlen(s), err);
}

static void test_values(void) {
    char err[VL_ERRLEN];
    json *j = parse(
        " {\"a\": [1, -2.5, 3e2, true, false, null], \"s\": \"x\\\"y\\\\z\\/\\n\\t\", \"o\": {}, "
        "\"big\": 123456789012, \"neg\": -9223372036854775808, \"huge\": 99999999999999999999}\n",
        err);
    CHECK(j && j->type == JSON_OBJ && j->n == 6, "json: parses an object of 6 members");
    const json *a = json_get(j, "a");
    CHECK(a && a->type == JSON_ARR && a->n == 6 && a->items[0].is_int && a->items[0].i == 1 &&
              !a->items[1].is_int && a->items[1].num == -2.5 && !a->items[2].is_int &&
              a->items[2].num == 300 && a->items[3].type == JSON_BOOL && a->items[3].b &&
              a->items[5].type == JSON_NULL,
          "json: numbers, booleans, null; 3e2 is not an integer");
    CHECK(strcmp(json_get_str(j, "s", ""), "x\"y\\z/\n\t") == 0, "json: simple escapes");
    CHECK(json_get(j, "o")->type == JSON_OBJ && json_get(j, "o")->n == 0, "json: empty object");
    CHECK(json_get_int(j, "big", 0) == 123456789012LL && json_get_int(j, "neg", 0) == INT64_MIN,
          "json: 64-bit integers exact");
    const json *h = json_get(j, "huge");
    CHECK(h && !h->is_int && h->num > 9e19, "json: integer beyond int64 is a float, not wrapped");
    CHECK(json_get_int(j, "s", -7) == -7 && json_get_str(j, "a", NULL) == NULL &&
              json_get_num(j, "zz", 4.5) == 4.5,
          "json: accessors return the default for absent or mistyped members");
    json_free(j);

    j = parse("\"\\u00e9\\u4e2d\\ud83d\\ude00\\ud800x\\u0000z\"", err);
    static const char want[] = "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xef\xbf\xbdx\0z";
    CHECK(j && j->type == JSON_STR && j->slen == sizeof want - 1 &&
              memcmp(j->s, want, sizeof want - 1) == 0,
          "json: \\u escapes to UTF-8, surrogate pair, lone surrogate -> U+FFFD, embedded NUL kept "
          "with length");
    json_free(j);
    j = parse("\"caf\xc3\xa9 \xe4\xb8\xad\"", err);
    CHECK(j && strcmp(j->s, "caf\xc3\xa9 \xe4\xb8\xad") == 0, "json: raw UTF-8 passes through");
    json_free(j);

    /* many members: growth of the member arrays */
    json_buf b = {0};
    json_buf_puts(&b, "{");
    for (int i = 0; i < 5000; i++)
        json_buf_printf(&b, "%s\"k%d\":[%d]", i ? "," : "", i, i);
    json_buf_puts(&b, "}");
    j = json_parse(b.p, b.len, err);
    const json *k = json_get(j, "k4999");
    CHECK(j && j->n == 5000 && k && k->items[0].i == 4999, "json: object of 5000 members");
    json_free(j);
    free(b.p);
}

static void test_errors(void) {
    static const char *const bad[] = {"",         "{",       "{\"a\"}",   "{\"a\":}",
                                      "[1,]",     "[1 2]",   "tru",       "nul",
                                      "\"abc",    "\"\\x\"", "\"\\u12\"", "01.",
                                      "-",        "1.",      "1e",        "{\"a\":1}x",
                                      "\"a\nb\"", "[1,2",    "{1:2}",     "\"\\ud800\\u12\"",
                                      "007",      NULL};
    int all = 1;
    char err[VL_ERRLEN];
    for (int i = 0; bad[i]; i++) {
        err[0] = 0;
        json *j = parse(bad[i], err);
        if (j || !strstr(err, "at byte")) {
            printf("  accepted or no position: '%s' (%s)\n", bad[i], err);
            all = 0;
        }
        json_free(j);
    }
    CHECK(all, "json: 21 malformed texts refused with a byte offset");
    /* deep nesting must fail cleanly, not overflow the stack */
    char *deep = xmalloc(100001);
    memset(deep, '[', 100000);
    deep[100000] = 0;
    json *j = parse(deep, err);
    CHECK(!j && strstr(err, "nesting"), "json: 100000 nested arrays refused: %s", err);
    free(deep);
    /* the parser must not read past len: parse a prefix of a longer buffer */
    j = json_parse("[1, 2] garbage", 6, err);
    CHECK(j && j->n == 2, "json: parses exactly len bytes");
    json_free(j);
    j = json_parse("\"abc\"", 3, err);
    CHECK(!j, "json: string cut by len is unterminated");
    char num[200];
    memset(num, '1', sizeof num - 1);
    num[sizeof num - 1] = 0;
    j = parse(num, err);
    CHECK(!j && strstr(err, "number too long"), "json: 199-digit number refused");
}

static void test_writer(void) {
    char raw[256];
    for (int i = 0; i < 255; i++)
        raw[i] = (char)(i + 1);
    json_buf b = {0};
    json_buf_str(&b, raw, 255);
    char err[VL_ERRLEN];
    json *j = json_parse(b.p, b.len, err);
    CHECK(j && j->type == JSON_STR && j->slen == 255 && memcmp(j->s, raw, 255) == 0,
          "json: json_buf_str of bytes 1..255 parses back to the same bytes");
    json_free(j);
    free(b.p);
    b = (json_buf){0};
    char big[2000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    json_buf_printf(&b, "<%s>", big);
    CHECK(b.len == 2001 && b.p[0] == '<' && b.p[2000] == '>' && b.p[2001] == 0,
          "json: json_buf_printf beyond 512 bytes");
    free(b.p);
}

int main(void) {
    test_values();
    test_errors();
    test_writer();
    CHECK_EXIT();
}
