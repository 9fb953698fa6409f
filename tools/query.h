/* query: what the programs that ask a teacher for vectors share
 * (teacher-embed for images, text-embed for prompts): a content-addressed
 * cache of answers, the query budget and counts, dropped items, and the
 * black-box teacher, a command fed a stream of queries whose embedding
 * stream of answers a second thread joins to them by query number.
 *
 * A run goes: q_init; for each input item in order, q_lookup (a cache hit,
 * or a miss), then for a miss q_over_budget and either q_send (black-box:
 * the item is queued and sent) or the tool's own computation (white-box,
 * then q_counted and q_cache_put); a hit is q_push'ed (black-box) or written
 * at once. Black-box, the output thread hands every item, in input order, to
 * the emit callback, and at the end calls finish; q_end waits for it. */
#ifndef VL_TOOL_QUERY_H
#define VL_TOOL_QUERY_H

#include "stream.h"

#include <pthread.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <sys/types.h>

/* One input item waiting for its vector. */
typedef struct q_item {
    struct q_item *next;
    uint8_t *data; /* the tool's (e.g. an encoded map of the keys to carry), freed with the item */
    size_t data_len;
    uint64_t index; /* the tool's */
    uint8_t key[32];
    int hit, dim;
    uint64_t qno;   /* a miss sent to the teacher: its query number */
    uint8_t *vec;   /* hit: the cached vector; a miss: the answer, once read */
    int bad;        /* a miss whose answer was dropped */
    char *where;    /* a miss sent to the teacher: the input item, for messages */
    int end, abort; /* end marker; abort: stop without finishing */
} q_item;

typedef struct q_run q_run;
struct q_run {
    /* set by the tool before q_init */
    const char *exec_cmd;   /* the black-box teacher, or NULL */
    const char *what;       /* what the queries are, plural ("images"), for messages */
    long long max_queries;  /* -1: no budget */
    long long max_errors;
    const char *cache_dir;  /* NULL: no cache */
    const char *cache_tag;  /* the kind of key ("vl2v teacher cache 1") */
    const char *identity;   /* the teacher's identity, part of every key */
    const char *variant;    /* e.g. the normalisation, part of every key */
    double timeout;         /* black-box: seconds without an answer before the vendor is killed; 0: none */
    /* black-box: opens the query stream's header (e.g. sw_header_image,
     * with no input header and no history: the vendor learns nothing else) */
    void (*query_header)(sw *s);
    /* black-box, from the output thread: one item's vector (in input order;
     * items whose answer was bad are not passed), then, after the last,
     * finish with the vectors' size (from the teacher's header when no item
     * came), which writes what the output still needs and q_trailer */
    void (*emit)(q_run *R, const q_item *p, const uint8_t *vec, int dim);
    void (*finish)(q_run *R, int dim);
    void *ctx;
    /* counts: queries, answered and dropped change in both threads (mu
     * guards them); hits and upstream_dropped are the input thread's */
    uint64_t queries, hits, dropped, upstream_dropped, answered;
    /* black-box state */
    pid_t vendor;
    int vin, vout;
    sw vw;
    sr *vr;
    q_item *head, *tail;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    unsigned long counter;
    int cache_failed; /* a write to the cache failed (warned once) */
    /* the watchdog (timeout): what the output thread waits for (under mu) */
    pthread_t dog;
    int waiting, timed_out, done;
    char wait_what[600]; /* "query 3 (<stdin>: record 4 (id 'x'))", "its header" */
    double wait_since;
};

/* The default of --timeout, in seconds. */
#define Q_TIMEOUT_DEFAULT 300
/* Creates the cache directory; black-box, starts the output thread (and,
 * with a timeout, the watchdog that kills a vendor which stops answering). */
void q_init(q_run *R);
/* The item's cache key from the bytes a[0..na) and b[0..nb) (with the tag,
 * identity and variant); when there is a cache and it holds an answer (of
 * want floats, unless want is 0), p is a hit (vec, dim set) and counted. A
 * damaged entry or one of another size is warned about (where: the item)
 * and is a miss. Returns p->hit. */
int q_lookup(q_run *R, q_item *p, const void *a, size_t na, const void *b, size_t nb, const char *where, int want);
/* 1 when a query more would exceed --max-queries. */
int q_over_budget(q_run *R);
/* Counts a query computed here (white-box). */
void q_counted(q_run *R);
/* Keeps an answer (dim floats) in the cache, if there is one; a failure only warns. */
void q_cache_put(q_run *R, const uint8_t key[32], int dim, const void *vec);
/* Black-box: queues the miss p (where: the input item) and sends it as the
 * next query, its keys written by write(w, arg) after the query number
 * 'id'; starts the teacher at the first. */
void q_send(q_run *R, q_item *p, const char *where, void (*write)(mpw *w, const void *arg), const void *arg);
/* Black-box: queues a hit, to be emitted in its turn. */
void q_push(q_run *R, q_item *p);
/* Black-box: no more items (abort: the run stops, finish is not called);
 * waits for the output thread. */
void q_end(q_run *R, int abort);
/* Either thread: warns with what (which names the item), counts the drop,
 * and fails past --max-errors. */
void q_drop(q_run *R, const char *what);
/* Writes the trailer of out: the records, dropped (upstream and ours),
 * queries and cache_hits. */
void q_trailer(q_run *R, sw *out);
/* Progress (common.h): the items taken so far (queries and cache hits),
 * dropped, and the queries and hits; final: the line of the totals, with
 * done the records written. */
void q_progress(q_run *R, int final, uint64_t done);
/* The budget's failure, at the input item where. */
noreturn void q_budget_failed(q_run *R, const char *where);
void q_item_free(q_item *p);

#endif
