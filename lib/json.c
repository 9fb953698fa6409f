/* json: recursive-descent JSON parser with bounded depth; JSON string writer. */
#include "json.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *start, *end;
    char *err;
    int depth;
} jp;

static int jerr(jp *j, const char *what)
{
    return vl_error(j->err, "JSON: %s at byte %ld", what, (long)(j->p - j->start));
}

static void ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hex4(jp *j, unsigned *out)
{
    if (j->end - j->p < 4) return jerr(j, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = j->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return jerr(j, "bad \\u escape");
    }
    j->p += 4;
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* parses a string at j->p (after the quote); output is never longer than input */
static int str(jp *j, char **out, size_t *outlen)
{
    const char *q = j->p;
    while (q < j->end && *q != '"' && *q != '\\') q++;
    size_t cap = (size_t)(j->end - j->p);
    char *o = xmalloc((q < j->end && *q == '"' ? (size_t)(q - j->p) : cap) + 1), *w = o;
    for (;;) {
        if (j->p >= j->end) {
            free(o);
            return jerr(j, "unterminated string");
        }
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"') break;
        if (c < 0x20) {
            free(o);
            return jerr(j, "control character in string");
        }
        if (c != '\\') {
            *w++ = (char)c;
            continue;
        }
        if (j->p >= j->end) {
            free(o);
            return jerr(j, "unterminated escape");
        }
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(j, &cp)) {
                free(o);
                return -1;
            }
            if (cp >= 0xd800 && cp <= 0xdbff && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') {
                j->p += 2;
                if (hex4(j, &lo)) {
                    free(o);
                    return -1;
                }
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else { /* lone high surrogate followed by another escape */
                    w += utf8_put(w, 0xfffd);
                    cp = lo;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
            w += utf8_put(w, cp); /* never longer than the 6-byte escape */
            break;
        }
        default: free(o); return jerr(j, "bad escape");
        }
    }
    *w = 0;
    *out = o;
    *outlen = (size_t)(w - o);
    return 0;
}

static int val(jp *j, json *v);

static int arr_or_obj(jp *j, json *v, int is_obj)
{
    if (++j->depth > 64) return jerr(j, "nesting deeper than 64");
    size_t cap = 0;
    v->type = is_obj ? JSON_OBJ : JSON_ARR;
    ws(j);
    if (j->p < j->end && *j->p == (is_obj ? '}' : ']')) {
        j->p++;
        j->depth--;
        return 0;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? cap * 2 : 8;
            v->items = xrealloc(v->items, cap * sizeof(json));
            if (is_obj) {
                v->keys = xrealloc(v->keys, cap * sizeof(char *));
                v->keylens = xrealloc(v->keylens, cap * sizeof(size_t));
            }
        }
        ws(j);
        if (is_obj) {
            if (j->p >= j->end || *j->p != '"') return jerr(j, "expected a string key");
            j->p++;
            if (str(j, &v->keys[v->n], &v->keylens[v->n])) return -1;
            ws(j);
            if (j->p >= j->end || *j->p != ':') {
                free(v->keys[v->n]);
                return jerr(j, "expected ':'");
            }
            j->p++;
        }
        memset(&v->items[v->n], 0, sizeof(json));
        v->n++;
        if (val(j, &v->items[v->n - 1])) return -1;
        ws(j);
        if (j->p >= j->end) return jerr(j, "unterminated container");
        char c = *j->p++;
        if (c == ',') continue;
        if (c == (is_obj ? '}' : ']')) break;
        return jerr(j, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    j->depth--;
    return 0;
}

static int num(jp *j, json *v)
{
    const char *s = j->p;
    int is_int = 1;
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p >= j->end || !(*j->p >= '0' && *j->p <= '9')) return jerr(j, "bad number");
    if (*j->p == '0' && j->end - j->p > 1 && j->p[1] >= '0' && j->p[1] <= '9') return jerr(j, "leading zero in number");
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    if (j->p < j->end && *j->p == '.') {
        is_int = 0;
        j->p++;
        if (j->p >= j->end || !(*j->p >= '0' && *j->p <= '9')) return jerr(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        is_int = 0;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (j->p >= j->end || !(*j->p >= '0' && *j->p <= '9')) return jerr(j, "bad number");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    size_t n = (size_t)(j->p - s);
    if (n > 64) return jerr(j, "number too long");
    char tmp[72];
    memcpy(tmp, s, n);
    tmp[n] = 0;
    v->type = JSON_NUM;
    v->num = strtod(tmp, NULL);
    if (is_int) {
        errno = 0;
        long long x = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            v->is_int = 1;
            v->i = x;
        }
    }
    return 0;
}

static int lit(jp *j, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0) return jerr(j, "unexpected token");
    j->p += n;
    return 0;
}

static int val(jp *j, json *v)
{
    ws(j);
    if (j->p >= j->end) return jerr(j, "unexpected end");
    switch (*j->p) {
    case '{': j->p++; return arr_or_obj(j, v, 1);
    case '[': j->p++; return arr_or_obj(j, v, 0);
    case '"': j->p++; v->type = JSON_STR; return str(j, &v->s, &v->slen);
    case 't': v->type = JSON_BOOL; v->b = 1; return lit(j, "true");
    case 'f': v->type = JSON_BOOL; v->b = 0; return lit(j, "false");
    case 'n': v->type = JSON_NULL; return lit(j, "null");
    default: return num(j, v);
    }
}

static void json_release(json *v)
{
    if (v->type == JSON_STR) free(v->s);
    if (v->type == JSON_ARR || v->type == JSON_OBJ) {
        for (size_t i = 0; i < v->n; i++) {
            json_release(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
        free(v->keylens);
    }
}

void json_free(json *j)
{
    if (!j) return;
    json_release(j);
    free(j);
}

json *json_parse(const char *text, size_t len, char *err)
{
    jp j = {text, text, text + len, err, 0};
    json *v = xcalloc(1, sizeof(json));
    if (val(&j, v) == 0) {
        ws(&j);
        if (j.p == j.end) return v;
        jerr(&j, "trailing characters");
    }
    json_free(v);
    return NULL;
}

const json *json_get(const json *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJ) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->n; i++)
        if (obj->keylens[i] == n && memcmp(obj->keys[i], key, n) == 0) return &obj->items[i];
    return NULL;
}

int64_t json_get_int(const json *obj, const char *key, int64_t def)
{
    const json *v = json_get(obj, key);
    return v && v->type == JSON_NUM && v->is_int ? v->i : def;
}

double json_get_num(const json *obj, const char *key, double def)
{
    const json *v = json_get(obj, key);
    return v && v->type == JSON_NUM ? v->num : def;
}

const char *json_get_str(const json *obj, const char *key, const char *def)
{
    const json *v = json_get(obj, key);
    return v && v->type == JSON_STR ? v->s : def;
}

void json_buf_put(json_buf *b, const char *s, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n + 1) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void json_buf_puts(json_buf *b, const char *s) { json_buf_put(b, s, strlen(s)); }

void json_buf_printf(json_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof tmp) {
        char *big = xmalloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        json_buf_put(b, big, (size_t)n);
        free(big);
    } else {
        json_buf_put(b, tmp, (size_t)n);
    }
}

void json_buf_str(json_buf *b, const char *s, size_t n)
{
    json_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') json_buf_put(b, "\\\"", 2);
        else if (c == '\\') json_buf_put(b, "\\\\", 2);
        else if (c == '\n') json_buf_put(b, "\\n", 2);
        else if (c == '\r') json_buf_put(b, "\\r", 2);
        else if (c == '\t') json_buf_put(b, "\\t", 2);
        else if (c < 0x20) json_buf_printf(b, "\\u%04x", c);
        else json_buf_put(b, (const char *)&c, 1);
    }
    json_buf_put(b, "\"", 1);
}
