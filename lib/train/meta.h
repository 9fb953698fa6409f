/* meta: the provenance a trained model file carries in its safetensors
 * metadata (style.md: a reader of the file alone can say how it was made):
 * the settings as canonical JSON (keys sorted, so equal settings give equal
 * strings and runs can be grouped by them) and each input's path, sha256 and
 * stream history. */
#ifndef VL_TRAIN_META_H
#define VL_TRAIN_META_H

#include "json.h"
#include "mp.h"

/* Settings: name/value pairs, rendered as one JSON object with sorted keys.
 * Values are JSON text (a number, a quoted string, an array) made by the
 * setters. */
typedef struct {
    int n, cap;
    char **key, **val;
} meta_settings;
void meta_settings_free(meta_settings *s);
void meta_set_num(meta_settings *s, const char *key, double v);
void meta_set_str(meta_settings *s, const char *key, const char *v);
/* an array of strings */
void meta_set_strs(meta_settings *s, const char *key, const char *const *v, int n);
/* The canonical JSON object (owned by the caller, free()). */
char *meta_settings_json(const meta_settings *s);

/* Appends to b (an open JSON array: the caller writes '[' and ']' and the
 * commas) one input {"path": ..., "sha256": ..., "history": [[argv]...]},
 * hashing the file; history is a stream header's `history` value, or NULL.
 * 0, or -1 with err naming the file. */
int meta_input(json_buf *b, const char *path, const mp_val *history, char *err);
/* A JSON array of strings. */
void meta_json_strs(json_buf *b, const char *const *v, int n);

#endif
