/* stream: vl2v record streams (wire format v1, see man/vl2v-stream.5 and
 * schemas/). A stream is one header map, zero or more item maps and one
 * trailer map {"end": true, "records": N, "dropped": K}. The reader checks the
 * framing, the version and the schema's keys; the writer emits the common
 * header keys (schema, version, history) and the trailer. */
#ifndef VL_STREAM_H
#define VL_STREAM_H

#include "mp.h"
#include "util.h"

#include <stdint.h>

#define STREAM_VERSION 1
/* default bound on one record, checked before any allocation */
#define STREAM_MAX_RECORD ((size_t)1 << 30)

enum stream_schema { SCHEMA_OTHER, SCHEMA_IMAGE, SCHEMA_EMBEDDING, SCHEMA_PREDICTION, SCHEMA_LOG };

typedef struct sr {
    int fd;
    char *name; /* for messages: a path or "<stdin>" */
    uint8_t *buf;
    size_t cap, start, end;
    int eof;
    size_t max_record;
    mp_arena arena;
    mp_val cur;
    uint64_t items;     /* items read in the current stream */
    uint64_t streams;   /* streams started */
    int state;          /* 0 before header, 1 in items, 2 after trailer */
    /* the current stream's header and trailer, owned copies */
    uint8_t *hdr_bytes, *trl_bytes;
    mp_arena hdr_arena, trl_arena;
    mp_val header, trailer;
    /* from the header */
    int schema;
    char *schema_name;
    int64_t dim;      /* embedding */
    int64_t nclasses; /* prediction */
    char err[VL_ERRLEN];
    /* the encoded bytes of the object sr_next returned last (valid as long
     * as the item), for copying an item verbatim with mpw_raw */
    const uint8_t *raw;
    size_t raw_len;
} sr;

/* Opens a reader on fd (not closed by sr_close). name is copied. */
sr *sr_open(int fd, const char *name);
/* Opens a reader on a copy of buf[0..n) (for tests and fuzzing); fd is -1. */
sr *sr_open_mem(const void *buf, size_t n, const char *name);
void sr_close(sr *r);

/* Reads and checks the header. want: the schema name required, or NULL for
 * any. Returns 0, or -1 with r->err set ("NAME: header: what"). */
int sr_header(sr *r, const char *want);

/* Next item: 1 with *item set (valid until the next call), 0 at the trailer
 * (r->trailer set), -1 on a framing error (r->err). */
int sr_next(sr *r, const mp_val **item);

/* After the trailer: 1 if another stream's header follows (read and checked
 * as by sr_header), 0 at a clean end of input, -1 on error. */
int sr_next_stream(sr *r, const char *want);

/* After the trailer: 0 if the input ends there, -1 (r->err) if more follows. */
int sr_finish(sr *r);

/* Checks an item against the header's schema (keys, types, sizes, finite
 * vectors). Returns 0, or -1 with a message in err naming the record and id. */
int sr_check_item(sr *r, const mp_val *item, char *err);

/* Describes the current item for messages: "NAME: record N (id 'x')". */
const char *sr_where(sr *r, const mp_val *item, char *buf, size_t n);

/* The trailer's counts, once read. */
int64_t sr_trailer_records(const sr *r);
int64_t sr_trailer_dropped(const sr *r);

/* The join keys of the items seen: an item's id and its view (an absent or
 * nil view is a value of its own, not view 0). Every stream made from a
 * stream joins on them, so a key seen twice is an error of the stream (a
 * shard joined twice, outputs of two runs mixed), not of one item. */
typedef struct stream_keys stream_keys;
stream_keys *stream_keys_new(void);
void stream_keys_free(stream_keys *k);
/* Adds the key of item (one sr_check_item accepted), read from r. Returns 0
 * when it is new, or -1 when it was seen before, with err set to
 * "NAME: record N (id 'x', view V): duplicate (id, view), first at NAME:
 * record M" (also across readers, which may be freed by then). */
int stream_keys_add(stream_keys *k, sr *r, const mp_val *item, char *err);
/* Adds the key (id[0..idlen), view: STREAM_NONE for none) of something
 * that is not a stream's item (a manifest row), with at (>= 1, e.g. its
 * line) to name it by. Returns 0 when it is new, else the at of its first
 * addition. A set takes keys by one of stream_keys_add and stream_keys_put. */
uint64_t stream_keys_put(stream_keys *k, const char *id, size_t idlen, int64_t view, uint64_t at);
/* The key (id[0..idlen), view) as an index: the number of keys added before
 * it (0 for the first), or -1 when it was never added. view: the item's view
 * (>= 0), or STREAM_NONE for an item without one. */
#define STREAM_NONE (-1)
int64_t stream_keys_find(const stream_keys *k, const char *id, size_t idlen, int64_t view);

/* Writer: s->w is the encoder, for the caller's own keys between begin and end. */
typedef struct sw {
    mpw w;
    uint64_t records, dropped;
} sw;

void sw_init(sw *s, int fd);
void sw_free(sw *s);
/* Opens the header map and writes schema, version and history: the input
 * header's history (if in_header is given) followed by argv. */
void sw_header_begin(sw *s, const char *schema, const mp_val *in_header, int argc, char **argv);
int sw_header_end(sw *s);
void sw_item_begin(sw *s);
int sw_item_end(sw *s); /* counts the record; flushes in large blocks */
/* Opens the trailer map with end/records/dropped; extra keys may follow. */
void sw_trailer_begin(sw *s);
/* Closes and flushes everything. Returns 0, or -1 with errno-style s->w.err. */
int sw_trailer_end(sw *s);

/* Header writers, one a schema: each opens the header map with schema,
 * version and history (as sw_header_begin) and writes the schema's own keys;
 * a producer's keys may follow before sw_header_end. */
void sw_header_image(sw *s, const mp_val *in_header, int argc, char **argv);
/* dim 1..2^24, dtype f32le, and space (what made the vectors) */
void sw_header_embedding(sw *s, int64_t dim, const char *space, const mp_val *in_header, int argc, char **argv);
/* A prediction stream's classes and the run that made it (schemas/prediction.md). */
typedef struct {
    const char *const *classes; /* nclasses >= 1 names */
    int nclasses;
    const char *method;          /* NULL: "" */
    int has_seed;                /* 0: seed is nil */
    int64_t seed;
    const char *const *sources;  /* the source domains trained on; none for zero-shot */
    int nsources;
    const char *settings;        /* canonical JSON of the hyperparameters; NULL: "" */
} stream_prediction_info;
void sw_header_prediction(sw *s, const stream_prediction_info *p, const mp_val *in_header, int argc, char **argv);
/* a training log (schemas/log.md): no keys beyond the common ones */
void sw_header_log(sw *s, const mp_val *in_header, int argc, char **argv);
/* texts to embed (schemas/text.md): no keys beyond the common ones */
void sw_header_text(sw *s, const mp_val *in_header, int argc, char **argv);

/* A whole embedding stream in memory: one or several streams (back to back
 * in one input, or from several readers) as one matrix. Rows are the items
 * sr_check_item accepted, in input order; an id holding a NUL byte (it
 * could not be a C string) makes an item bad too. */
typedef struct {
    int64_t n, dim;
    float *rows;                 /* n x dim, row-major */
    char **id;                   /* per row, owned */
    char **cls, **domain, **split; /* per row, owned; NULL where absent or nil */
    int64_t *label, *view;       /* per row; STREAM_NONE where absent or nil */
    char *space;                 /* the header's space */
    char *source;                /* the first reader's name, for messages */
    mp_val header;               /* the first stream's header (its history), owned */
    int64_t dropped;             /* the trailers' dropped counts, summed */
    int64_t bad;                 /* the items this load dropped */
    stream_keys *keys;           /* (id, view) -> row: stream_matrix_find */
    /* private */
    int64_t cap;
    uint8_t *hdr_bytes;
    mp_arena hdr_arena;
} stream_matrix;

/* Called with the message of each bad item (sr_check_item's, naming the
 * record and id), which the load drops and counts in m->bad. Returns 0 to go
 * on, or non-zero to stop: the load then fails with that message. */
typedef int (*stream_bad_fn)(void *ctx, const char *msg);

void stream_matrix_init(stream_matrix *m);
void stream_matrix_free(stream_matrix *m);
/* Reads every stream of r, from its header (read here unless the caller
 * did) to the end of input, into m. A later call (another reader) appends:
 * its dim and space must be those of the first. A bad item goes to bad (NULL:
 * every bad item fails the load); a bad stream, a (id, view) seen before,
 * another dim or space fail at once. Returns 0, or -1 with err set
 * ("NAME: where: what"); m is then incomplete, for stream_matrix_free only. */
int stream_matrix_read(stream_matrix *m, sr *r, stream_bad_fn bad, void *ctx, char *err);
/* The row of (id, view) (view STREAM_NONE: an item without one), or -1. */
int64_t stream_matrix_find(const stream_matrix *m, const char *id, int64_t view);

/* An owned copy of item's string key, or NULL where it is absent, nil or no string. */
char *stream_get_str(const mp_val *item, const char *key);
/* item's index key (label, view): its value, or STREAM_NONE where absent or nil. */
int64_t stream_get_index(const mp_val *item, const char *key);

/* Copies the listed keys that are present in item into the open map. */
void stream_copy_keys(mpw *w, const mp_val *item, const char *const *keys);
/* optional keys every schema carries over: label class domain split view path text */
extern const char *const STREAM_META_KEYS[];

#endif
