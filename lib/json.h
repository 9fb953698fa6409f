/* json: a strict JSON parser (RFC 8259) into a tree, for safetensors headers,
 * config.json and vocab.json. Depth and size are bounded; strings are decoded
 * to UTF-8 (\u escapes and surrogate pairs included) and NUL-terminated. */
#ifndef VL_JSON_H
#define VL_JSON_H

#include <stddef.h>
#include <stdint.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ };

typedef struct json json;
struct json {
    int type;
    int b;           /* JSON_BOOL */
    double num;      /* JSON_NUM */
    int is_int;      /* JSON_NUM written without fraction or exponent, fits int64 */
    int64_t i;       /* JSON_NUM when is_int */
    char *s;         /* JSON_STR */
    size_t slen;     /* JSON_STR bytes, without the NUL */
    size_t n;        /* JSON_ARR / JSON_OBJ entries */
    json *items;     /* JSON_ARR values; JSON_OBJ values */
    char **keys;     /* JSON_OBJ keys (NUL-terminated) */
    size_t *keylens;
};

/* Parses text[0..len). Returns a tree to release with json_free, or NULL with
 * a message (with byte offset) in err. */
json *json_parse(const char *text, size_t len, char *err);
void json_free(json *j);

/* Object member by key, or NULL. */
const json *json_get(const json *obj, const char *key);
/* Convenience accessors: return def when absent or of another type. */
int64_t json_get_int(const json *obj, const char *key, int64_t def);
double json_get_num(const json *obj, const char *key, double def);
const char *json_get_str(const json *obj, const char *key, const char *def);

/* Appends s to a growable buffer as a JSON string literal (with quotes). */
typedef struct {
    char *p;
    size_t len, cap;
} json_buf;
void json_buf_put(json_buf *b, const char *s, size_t n);
void json_buf_puts(json_buf *b, const char *s);
void json_buf_printf(json_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void json_buf_str(json_buf *b, const char *s, size_t n);

#endif
