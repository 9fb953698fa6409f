/* mp: a small MessagePack codec. The decoder parses one object from a byte
 * buffer into a tree of mp_val nodes held in an arena; strings and bins point
 * into the input buffer (zero copy), so the tree lives as long as both. Every
 * length is checked against the bytes present and against a caller's limit
 * before anything is allocated; a tree takes 16 bytes a value, so a caller
 * that decodes untrusted input bounds the values too (mp_arena.max_vals: the
 * stream reader holds a record's tree to its record bound).
 * The encoder writes into a growable buffer and patches container counts when
 * the container ends, so callers need not count keys in advance. */
#ifndef VL_MP_H
#define VL_MP_H

#include <stddef.h>
#include <stdint.h>

enum mp_type { MP_NIL, MP_BOOL, MP_INT, MP_UINT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT };

typedef struct mp_val mp_val;
struct mp_val {
    uint8_t type;
    int8_t ext_type;
    uint32_t len; /* bytes of STR/BIN/EXT, elements of ARRAY, pairs of MAP */
    union {
        int64_t i;        /* MP_INT (negative or small) */
        uint64_t u;       /* MP_UINT (non-negative) */
        double f;         /* MP_FLOAT (float32 widened) */
        int b;            /* MP_BOOL */
        const char *s;    /* MP_STR, not NUL-terminated */
        const uint8_t *p; /* MP_BIN, MP_EXT */
        mp_val *a;        /* MP_ARRAY: len values; MP_MAP: 2*len values, key then value */
    } v;
};

/* Bump allocator for decoded trees; mp_arena_reset() frees all at once.
 * max_vals, when not 0, bounds the values one decode may hold (a node takes
 * sizeof(mp_val) bytes, 16 times a one-byte value's encoding). */
typedef struct mp_arena {
    struct mp_block *head;
    size_t used_total;
    size_t max_vals;
} mp_arena;
void mp_arena_reset(mp_arena *a);
void mp_arena_free(mp_arena *a);

/* Decodes one object from buf[0..n). Returns 1 and sets *used on success;
 * 0 when the object continues past n (read more and call again); -1 on
 * malformed input or a length over max_len, with a message in err. */
int mp_decode(mp_arena *a, const uint8_t *buf, size_t n, size_t max_len, mp_val *out, size_t *used,
              char *err);

/* Lookups on decoded maps; NULL / -1 when absent or of another type. */
const mp_val *mp_get(const mp_val *map, const char *key);
int mp_str_eq(const mp_val *v, const char *s);
int mp_get_i64(const mp_val *map, const char *key, int64_t *out);
/* returns a malloc'ed NUL-terminated copy, or NULL */
char *mp_get_strdup(const mp_val *map, const char *key);
/* integer value of v (INT or UINT within int64 range) */
int mp_as_i64(const mp_val *v, int64_t *out);
int mp_as_f64(const mp_val *v, double *out);

/* Nesting: the decoder refuses more than MP_MAX_DEPTH levels; the encoder
 * holds more, so that any decoded value can be copied (mpw_value) into a
 * stream's item or header map. */
#define MP_MAX_DEPTH 64
#define MPW_MAX_DEPTH (MP_MAX_DEPTH + 8)

/* Encoder. err is set on the first failed write to fd; later writes are no-ops. */
typedef struct mpw {
    uint8_t *buf;
    size_t len, cap;
    int fd;
    int err; /* errno of the first failed write, 0 if none */
    int depth;
    size_t open_at[MPW_MAX_DEPTH]; /* offset of each open container's header */
    uint32_t count[MPW_MAX_DEPTH]; /* values written in it so far */
    uint8_t is_map[MPW_MAX_DEPTH];
    uint64_t bytes_out; /* bytes written to fd */
} mpw;

void mpw_init(mpw *w, int fd);
void mpw_free(mpw *w);
void mpw_nil(mpw *w);
void mpw_bool(mpw *w, int b);
void mpw_int(mpw *w, int64_t i);
void mpw_uint(mpw *w, uint64_t u);
void mpw_f64(mpw *w, double f);
void mpw_f32(mpw *w, float f);
void mpw_str(mpw *w, const char *s);
void mpw_strn(mpw *w, const char *s, size_t n);
void mpw_bin(mpw *w, const void *p, size_t n);
/* Starts a bin of n bytes and returns where to write them (valid until the
 * next mpw call). */
uint8_t *mpw_bin_reserve(mpw *w, size_t n);
void mpw_map(mpw *w);   /* then key, value, key, value, ... mpw_end() */
void mpw_array(mpw *w); /* then values ... mpw_end() */
void mpw_end(mpw *w);
void mpw_value(mpw *w, const mp_val *v); /* deep copy of a decoded value */
/* Appends one value that is already encoded (n bytes of exactly one
 * MessagePack object), e.g. an input item copied verbatim. */
void mpw_raw(mpw *w, const void *p, size_t n);
/* Writes the buffer to fd when no container is open and it holds more than
 * `threshold` bytes (0: always). Returns 0, or -1 with w->err set. */
int mpw_flush(mpw *w, size_t threshold);

#endif
