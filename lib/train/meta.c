/* meta: canonical settings and input provenance for model files; see meta.h. */
#include "train/meta.h"

#include "sha256.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void meta_settings_free(meta_settings *s)
{
    for (int i = 0; i < s->n; i++) free(s->key[i]), free(s->val[i]);
    free(s->key);
    free(s->val);
    memset(s, 0, sizeof *s);
}

static void set(meta_settings *s, const char *key, char *val)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->key[i], key) == 0) {
            free(s->val[i]);
            s->val[i] = val;
            return;
        }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->key = xrealloc(s->key, (size_t)s->cap * sizeof *s->key);
        s->val = xrealloc(s->val, (size_t)s->cap * sizeof *s->val);
    }
    s->key[s->n] = xstrdup(key);
    s->val[s->n++] = val;
}

void meta_set_num(meta_settings *s, const char *key, double v)
{
    char buf[64];
    /* %.9g keeps a float's value exactly and prints integers plainly */
    snprintf(buf, sizeof buf, "%.9g", v);
    set(s, key, xstrdup(buf));
}

void meta_set_str(meta_settings *s, const char *key, const char *v)
{
    json_buf b = {0};
    json_buf_str(&b, v, strlen(v));
    json_buf_put(&b, "", 1);
    set(s, key, b.p);
}

void meta_json_strs(json_buf *b, const char *const *v, int n)
{
    json_buf_puts(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) json_buf_puts(b, ",");
        json_buf_str(b, v[i], strlen(v[i]));
    }
    json_buf_puts(b, "]");
}

void meta_set_strs(meta_settings *s, const char *key, const char *const *v, int n)
{
    json_buf b = {0};
    meta_json_strs(&b, v, n);
    json_buf_put(&b, "", 1);
    set(s, key, b.p);
}

static int by_key(const void *a, const void *b) { return strcmp(**(char *const *const *)a, **(char *const *const *)b); }

char *meta_settings_json(const meta_settings *s)
{
    /* sort pairs by key through an index of pointers to the key slots */
    char ***order = xmalloc(((size_t)s->n + 1) * sizeof *order);
    for (int i = 0; i < s->n; i++) order[i] = &s->key[i];
    qsort(order, (size_t)s->n, sizeof *order, by_key);
    json_buf b = {0};
    json_buf_puts(&b, "{");
    for (int i = 0; i < s->n; i++) {
        int k = (int)(order[i] - s->key);
        if (i) json_buf_puts(&b, ",");
        json_buf_str(&b, s->key[k], strlen(s->key[k]));
        json_buf_puts(&b, ":");
        json_buf_puts(&b, s->val[k]);
    }
    json_buf_puts(&b, "}");
    json_buf_put(&b, "", 1);
    free(order);
    return b.p;
}

int meta_input(json_buf *b, const char *path, const mp_val *history, char *err)
{
    char hex[65];
    if (sha256_file(path, hex, err) != 0) return -1;
    json_buf_puts(b, "{\"path\":");
    json_buf_str(b, path, strlen(path));
    json_buf_printf(b, ",\"sha256\":\"%s\",\"history\":[", hex);
    if (history && history->type == MP_ARRAY)
        for (uint32_t i = 0; i < history->len; i++) {
            const mp_val *argv = &history->v.a[i];
            if (i) json_buf_puts(b, ",");
            json_buf_puts(b, "[");
            for (uint32_t k = 0; argv->type == MP_ARRAY && k < argv->len; k++) {
                const mp_val *a = &argv->v.a[k];
                if (k) json_buf_puts(b, ",");
                if (a->type == MP_STR)
                    json_buf_str(b, a->v.s, a->len);
                else
                    json_buf_puts(b, "null");
            }
            json_buf_puts(b, "]");
        }
    json_buf_puts(b, "]}");
    return 0;
}
