/* tok: CLIP's byte-level BPE tokenizer (see tok.h). Text is decoded to code
 * points for the clean-up and the pre-tokenisation, each pre-token goes back
 * to UTF-8 bytes, and BPE runs on vocabulary ids: a word starts as one id per
 * byte (the last byte's symbol carrying "</w>") and the adjacent pair of
 * lowest merge rank is merged everywhere, left to right, until no pair has a
 * rank, as simple_tokenizer.bpe() does on strings. */
#include "tok.h"

#include "json.h"
#include "tok_unicode.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* as simple_tokenizer and CLIPTokenizer: merges[1 : 49152 - 256 - 2 + 1] */
#define TOK_MAX_MERGES (49152 - 256 - 2)
/* words whose BPE is cached; later words are tokenised each time */
#define TOK_CACHE_MAX 200000
#define TOK_MAX_FILE ((size_t)256 << 20)

/* ---- hash maps ---------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* string -> int32; keys are owned copies */
typedef struct {
    char *key;
    uint32_t len;
    int32_t val;
} smap_slot;
typedef struct {
    smap_slot *s;
    size_t cap, n; /* cap a power of two */
} smap;

static void smap_grow(smap *m);

static smap_slot *smap_find(const smap *m, const char *k, size_t n)
{
    if (!m->cap) return NULL;
    size_t i = hash_bytes(k, n) & (m->cap - 1);
    for (;;) {
        smap_slot *e = &m->s[i];
        if (!e->key) return e;
        if (e->len == n && memcmp(e->key, k, n) == 0) return e;
        i = (i + 1) & (m->cap - 1);
    }
}

static const int32_t *smap_get(const smap *m, const char *k, size_t n)
{
    smap_slot *e = smap_find(m, k, n);
    return e && e->key ? &e->val : NULL;
}

/* inserts or overwrites (a later duplicate wins, as in a Python dict) */
static void smap_put(smap *m, const char *k, size_t n, int32_t val)
{
    if (2 * (m->n + 1) > m->cap) smap_grow(m);
    smap_slot *e = smap_find(m, k, n);
    if (!e->key) {
        e->key = xstrndup(k, n);
        e->len = (uint32_t)n;
        m->n++;
    }
    e->val = val;
}

static void smap_grow(smap *m)
{
    smap old = *m;
    m->cap = old.cap ? 2 * old.cap : 1024;
    m->s = xcalloc(m->cap, sizeof *m->s);
    m->n = old.n;
    for (size_t i = 0; i < old.cap; i++)
        if (old.s[i].key) *smap_find(m, old.s[i].key, old.s[i].len) = old.s[i];
    free(old.s);
}

static void smap_free(smap *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->s[i].key);
    free(m->s);
    memset(m, 0, sizeof *m);
}

/* (left id, right id) -> (rank, merged id) */
typedef struct {
    uint64_t key; /* left << 32 | right, + 1 so that 0 is empty */
    int32_t rank, merged;
} pmap_slot;

/* ---- the tokenizer ------------------------------------------------------ */

struct tok {
    smap vocab;
    pmap_slot *pairs;
    size_t pcap;
    int32_t byte_id[256], byte_end_id[256]; /* a byte's symbol, alone and with </w> */
    int32_t sot, eot, nvocab;
    smap cache;     /* word bytes -> offset of [count, ids...] in cache_ids */
    tok_ids cache_ids;
};

static void ids_push(tok_ids *a, int32_t v)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = v;
}

static pmap_slot *pair_find(const tok *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = hash_u64(key) & (t->pcap - 1);
    for (;;) {
        pmap_slot *e = &t->pairs[i];
        if (!e->key || e->key == key) return e;
        i = (i + 1) & (t->pcap - 1);
    }
}

static int32_t pair_rank(const tok *t, int32_t a, int32_t b, int32_t *merged)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = hash_u64(key) & (t->pcap - 1);
    for (;;) {
        const pmap_slot *e = &t->pairs[i];
        if (!e->key) return INT32_MAX;
        if (e->key == key) {
            *merged = e->merged;
            return e->rank;
        }
        i = (i + 1) & (t->pcap - 1);
    }
}

/* simple_tokenizer's bytes_to_unicode(): printable Latin-1 bytes stand for
 * themselves, the others for 256 + n in byte order. order[] lists the bytes
 * as the dict iterates them (the order of the first 256 vocabulary ids). */
static void byte_unicode(uint32_t cp[256], int order[256])
{
    int k = 0, n = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
            cp[b] = (uint32_t)b;
            order[k++] = b;
        }
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
            cp[b] = 256 + (uint32_t)n++;
            order[k++] = b;
        }
}

static size_t utf8_put(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (char)(0x80 | (c >> 6 & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Reads the merges of a file (gzip or plain): the first line is a header,
 * then up to TOK_MAX_MERGES lines "LEFT RIGHT". *text holds the file (split
 * in place; the caller frees it, *left and *right), (*left)[i] and
 * (*right)[i] point into it. Returns the count or -1. */
static long read_merges(const char *path, char **text, char ***left, char ***right, char *err)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz) return vl_error(err, "%s: %s", path, errno ? strerror(errno) : "cannot open");
    size_t cap = 1 << 20, len = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap >= TOK_MAX_FILE) {
                gzclose(gz);
                free(buf);
                return vl_error(err, "%s: larger than %zu bytes", path, TOK_MAX_FILE);
            }
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
        int got = gzread(gz, buf + len, (unsigned)(cap - len));
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            vl_error(err, "%s: %s", path, zerr == Z_ERRNO ? strerror(errno) : msg);
            gzclose(gz);
            free(buf);
            return -1;
        }
        if (got == 0) break;
        len += (size_t)got;
    }
    gzclose(gz);
    buf[len] = 0;
    if (memchr(buf, 0, len)) {
        free(buf);
        return vl_error(err, "%s: not a merges file (NUL byte)", path);
    }
    char **l = xmalloc(TOK_MAX_MERGES * sizeof *l), **r = xmalloc(TOK_MAX_MERGES * sizeof *r);
    long n = 0, lineno = 1;
    char *p = strchr(buf, '\n');
    p = p ? p + 1 : buf + len;
    while (*p && n < TOK_MAX_MERGES) {
        lineno++;
        char *end = strchr(p, '\n');
        if (!end) end = p + strlen(p);
        char *next = *end ? end + 1 : end;
        *end = 0;
        if (end > p && end[-1] == '\r') end[-1] = 0;
        if (!*p && !*next) break; /* the final newline */
        char *save;
        char *a = strtok_r(p, " \t", &save);
        char *b = a ? strtok_r(NULL, " \t", &save) : NULL;
        if (!a || !b || strtok_r(NULL, " \t", &save)) {
            free(buf);
            free(l);
            free(r);
            return vl_error(err, "%s: line %ld: not a merge (two symbols separated by a space)", path, lineno);
        }
        l[n] = a;
        r[n] = b;
        n++;
        p = next;
    }
    if (n == 0) {
        free(buf);
        free(l);
        free(r);
        return vl_error(err, "%s: no merges", path);
    }
    *text = buf;
    *left = l;
    *right = r;
    return n;
}

static int load_vocab_json(tok *t, const char *path, char *err)
{
    size_t len;
    char *text = vl_read_file(path, TOK_MAX_FILE, &len, err);
    if (!text) return -1;
    json *j = json_parse(text, len, err);
    free(text);
    if (!j) {
        char msg[VL_ERRLEN];
        snprintf(msg, sizeof msg, "%s", err);
        return vl_error(err, "%s: %s", path, msg);
    }
    if (j->type != JSON_OBJ) {
        json_free(j);
        return vl_error(err, "%s: not a JSON object", path);
    }
    for (size_t i = 0; i < j->n; i++) {
        const json *v = &j->items[i];
        if (v->type != JSON_NUM || !v->is_int || v->i < 0 || v->i >= INT32_MAX) {
            vl_error(err, "%s: token '%.40s': id is not a non-negative integer", path, j->keys[i]);
            json_free(j);
            return -1;
        }
        smap_put(&t->vocab, j->keys[i], j->keylens[i], (int32_t)v->i);
        if ((int32_t)v->i + 1 > t->nvocab) t->nvocab = (int32_t)v->i + 1;
    }
    json_free(j);
    return 0;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *tok_locate(const char *model, const char *bpe, const char *fallback, char *err)
{
    if (bpe) return xstrdup(bpe);
    struct stat st;
    char *dir;
    if (stat(model, &st) == 0 && S_ISDIR(st.st_mode)) {
        dir = xstrdup(model);
    } else {
        const char *slash = strrchr(model, '/');
        dir = slash ? xstrndup(model, (size_t)(slash - model)) : xstrdup(".");
    }
    size_t n = strlen(dir) + 64;
    char *a = xmalloc(n), *b = xmalloc(n), *found = NULL;
    snprintf(a, n, "%s/vocab.json", dir);
    snprintf(b, n, "%s/merges.txt", dir);
    if (is_file(a) && is_file(b)) {
        found = xstrdup(dir);
    } else {
        snprintf(a, n, "%s/" TOK_BPE_FILE, dir);
        if (is_file(a)) found = xstrdup(a);
        else if (fallback) found = xstrdup(fallback);
    }
    if (!found)
        vl_error(err, "%s: no tokenizer in %s (vocab.json + merges.txt or " TOK_BPE_FILE
                 ") and none installed; give --bpe FILE", model, dir);
    free(a), free(b), free(dir);
    return found;
}

int tok_load(tok **out, const char *path, char *err)
{
    struct stat st;
    if (stat(path, &st) != 0) return vl_error(err, "%s: %s", path, strerror(errno));
    int is_dir = S_ISDIR(st.st_mode);
    char *vocab_path = NULL, *merges_path = NULL;
    if (is_dir) {
        size_t n = strlen(path) + 16;
        vocab_path = xmalloc(n);
        merges_path = xmalloc(n);
        snprintf(vocab_path, n, "%s/vocab.json", path);
        snprintf(merges_path, n, "%s/merges.txt", path);
    } else {
        merges_path = xstrdup(path);
    }

    tok *t = xcalloc(1, sizeof *t);
    char *text = NULL, **left = NULL, **right = NULL;
    int rc = -1;
    long nm = read_merges(merges_path, &text, &left, &right, err);
    if (nm < 0) goto done;

    uint32_t bcp[256];
    int order[256];
    byte_unicode(bcp, order);
    char sym[256][8];
    for (int b = 0; b < 256; b++) sym[b][utf8_put(sym[b], bcp[b])] = 0;

    if (is_dir) {
        if (load_vocab_json(t, vocab_path, err) != 0) goto done;
    } else {
        /* simple_tokenizer: bytes, bytes + </w>, merges joined, specials */
        int32_t id = 0;
        char buf[64];
        for (int k = 0; k < 256; k++) smap_put(&t->vocab, sym[order[k]], strlen(sym[order[k]]), id++);
        for (int k = 0; k < 256; k++) {
            int n = snprintf(buf, sizeof buf, "%s</w>", sym[order[k]]);
            smap_put(&t->vocab, buf, (size_t)n, id++);
        }
        for (long i = 0; i < nm; i++) {
            size_t la = strlen(left[i]), lb = strlen(right[i]);
            char *joined = xmalloc(la + lb + 1);
            memcpy(joined, left[i], la);
            memcpy(joined + la, right[i], lb + 1);
            smap_put(&t->vocab, joined, la + lb, id++);
            free(joined);
        }
        smap_put(&t->vocab, "<|startoftext|>", 15, id++);
        smap_put(&t->vocab, "<|endoftext|>", 13, id++);
        t->nvocab = id;
    }
    const char *vname = is_dir ? vocab_path : merges_path;

    for (int b = 0; b < 256; b++) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "%s</w>", sym[b]);
        const int32_t *a = smap_get(&t->vocab, sym[b], strlen(sym[b]));
        const int32_t *e = smap_get(&t->vocab, buf, (size_t)n);
        if (!a || !e) {
            vl_error(err, "%s: no token for byte 0x%02x ('%s'%s)", vname, b, a ? buf : sym[b], a ? "" : " alone");
            goto done;
        }
        t->byte_id[b] = *a;
        t->byte_end_id[b] = *e;
    }
    const int32_t *s = smap_get(&t->vocab, "<|startoftext|>", 15), *e = smap_get(&t->vocab, "<|endoftext|>", 13);
    if (!s || !e) {
        vl_error(err, "%s: no %s token", vname, s ? "<|endoftext|>" : "<|startoftext|>");
        goto done;
    }
    t->sot = *s;
    t->eot = *e;

    t->pcap = 1;
    while (t->pcap < 2 * (size_t)nm + 2) t->pcap *= 2;
    t->pairs = xcalloc(t->pcap, sizeof *t->pairs);
    for (long i = 0; i < nm; i++) {
        size_t la = strlen(left[i]), lb = strlen(right[i]);
        char *joined = xmalloc(la + lb + 1);
        memcpy(joined, left[i], la);
        memcpy(joined + la, right[i], lb + 1);
        const int32_t *a = smap_get(&t->vocab, left[i], la), *b = smap_get(&t->vocab, right[i], lb),
                      *m = smap_get(&t->vocab, joined, la + lb);
        free(joined);
        if (!a || !b || !m) {
            vl_error(err, "%s: line %ld: merge '%s %s': %s not in the vocabulary", merges_path, i + 2, left[i],
                     right[i], !a ? "the left symbol is" : !b ? "the right symbol is" : "the merged symbol is");
            goto done;
        }
        pmap_slot *p = pair_find(t, *a, *b);
        p->key = ((uint64_t)(uint32_t)*a << 32 | (uint32_t)*b) + 1;
        p->rank = (int32_t)i; /* a repeated merge takes its last rank, as dict(zip(...)) */
        p->merged = *m;
    }
    rc = 0;
done:
    free(text);
    free(left);
    free(right);
    free(vocab_path);
    free(merges_path);
    if (rc != 0) {
        tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void tok_free(tok *t)
{
    if (!t) return;
    smap_free(&t->vocab);
    smap_free(&t->cache);
    free(t->cache_ids.v);
    free(t->pairs);
    free(t);
}

int32_t tok_sot(const tok *t) { return t->sot; }
int32_t tok_eot(const tok *t) { return t->eot; }
int32_t tok_vocab_size(const tok *t) { return t->nvocab; }

/* ---- code points -------------------------------------------------------- */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} cps;

static void cps_push(cps *a, uint32_t c)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 256;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = c;
}

static void cps_push_utf8(cps *a, const char *s)
{
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        uint32_t c = *p;
        int k = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
        if (k) c &= 0x3F >> k;
        p++;
        while (k--) c = c << 6 | (*p++ & 0x3F);
        cps_push(a, c);
    }
}

/* strict UTF-8, as Python's decoder: no overlong forms, surrogates or
 * values past U+10FFFF */
static int utf8_decode(const char *text, size_t len, cps *out, char *err)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        uint32_t c = s[i];
        if (c < 0x80) {
            cps_push(out, c);
            i++;
            continue;
        }
        int k;
        uint32_t min;
        if (c >= 0xC2 && c <= 0xDF) k = 1, min = 0x80, c &= 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) k = 2, min = 0x800, c &= 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, min = 0x10000, c &= 0x07;
        else return vl_error(err, "invalid UTF-8 at byte %zu", i);
        for (int j = 1; j <= k; j++) {
            if (i + (size_t)j >= len || (s[i + j] & 0xC0) != 0x80)
                return vl_error(err, "invalid UTF-8 at byte %zu", i);
            c = c << 6 | (s[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000))
            return vl_error(err, "invalid UTF-8 at byte %zu", i);
        cps_push(out, c);
        i += (size_t)k + 1;
    }
    return 0;
}

static unsigned uflags(uint32_t c)
{
    if (c < 128) return tok_u_ascii[c];
    size_t lo = 0, hi = tok_u_nruns; /* last run whose start <= c */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if ((tok_u_runs[mid] >> 8) <= c) lo = mid;
        else hi = mid;
    }
    return tok_u_runs[lo] & 0xFF;
}

static const tok_u_subst *subst_find(const tok_u_subst *tab, size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tab[mid].cp < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && tab[lo].cp == c ? &tab[lo] : NULL;
}

static int u32_in(const uint32_t *tab, size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tab[mid] < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && tab[lo] == c;
}

/* ---- NFC (UAX #15): decompose, order marks by combining class, compose ---- */

static unsigned ccc(uint32_t c)
{
    if (c < 0x300) return 0;
    size_t lo = 0, hi = tok_u_nccc_runs;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if ((tok_u_ccc_runs[mid] >> 8) <= c) lo = mid;
        else hi = mid;
    }
    return tok_u_ccc_runs[lo] & 0xFF;
}

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21, TCOUNT = 28,
       NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = tok_u_ncomps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const tok_u_comp *e = &tok_u_comps[mid];
        if (e->a < a || (e->a == a && e->b < b)) lo = mid + 1;
        else hi = mid;
    }
    return lo < tok_u_ncomps && tok_u_comps[lo].a == a && tok_u_comps[lo].b == b ? tok_u_comps[lo].c : 0;
}

static void nfc(const cps *in, cps *out)
{
    size_t i;
    for (i = 0; i < in->n && in->v[i] < 0x300; i++)
        ;
    if (i == in->n) { /* below U+0300 nothing decomposes, reorders or composes */
        for (i = 0; i < in->n; i++) cps_push(out, in->v[i]);
        return;
    }
    cps d = {0};
    for (i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c >= SBASE && c < SBASE + SCOUNT) {
            uint32_t s = c - SBASE;
            cps_push(&d, LBASE + s / NCOUNT);
            cps_push(&d, VBASE + s % NCOUNT / TCOUNT);
            if (s % TCOUNT) cps_push(&d, TBASE + s % TCOUNT);
            continue;
        }
        size_t lo = 0, hi = tok_u_ndecomps;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (tok_u_decomps[mid].cp < c) lo = mid + 1;
            else hi = mid;
        }
        if (lo < tok_u_ndecomps && tok_u_decomps[lo].cp == c)
            for (int k = 0; k < tok_u_decomps[lo].n; k++) cps_push(&d, tok_u_decomps[lo].d[k]);
        else cps_push(&d, c);
    }
    /* canonical order: a stable sort of each run of marks by class */
    for (i = 1; i < d.n; i++) {
        unsigned k = ccc(d.v[i]);
        if (!k) continue;
        for (size_t j = i; j > 0; j--) {
            unsigned kp = ccc(d.v[j - 1]);
            if (kp <= k) break;
            uint32_t t = d.v[j];
            d.v[j] = d.v[j - 1];
            d.v[j - 1] = t;
        }
    }
    /* compose: a character joins the last starter unless a character left
     * between them has class 0 or a class not below its own (blocked) */
    size_t starter = SIZE_MAX;
    for (i = 0; i < d.n; i++) {
        uint32_t c = d.v[i];
        unsigned k = ccc(c);
        if (starter != SIZE_MAX) {
            size_t last = out->n - 1;
            unsigned kl = last == starter ? 0 : ccc(out->v[last]);
            int blocked = last != starter && (kl == 0 || kl >= k);
            uint32_t m = blocked ? 0 : compose(out->v[starter], c);
            if (m) {
                out->v[starter] = m;
                continue;
            }
        }
        if (k == 0) starter = out->n;
        cps_push(out, c);
    }
    free(d.v);
}

/* The value of name in a table of n entities sorted by name, or NULL. */
static const char *entity_find_in(const tok_u_entity *tab, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int d = strcmp(tab[mid].name, name);
        if (d == 0) return tab[mid].value;
        if (d < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static const char *entity_find(const char *name) { return entity_find_in(tok_u_entities, tok_u_nentities, name); }

static int is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static int is_xdigit(uint32_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* Python's html.unescape: the pattern
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * replaced by _replace_charref's rules. */
static void html_unescape(const cps *in, cps *out)
{
    const uint32_t *s = in->v;
    size_t n = in->n, i = 0;
    while (i < n) {
        if (s[i] != '&') {
            cps_push(out, s[i++]);
            continue;
        }
        size_t j = i + 1;
        if (j < n && s[j] == '#') {
            int hex = j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X');
            size_t k = j + 1 + (size_t)hex;
            if (k >= n || !(hex ? is_xdigit(s[k]) : is_digit(s[k]))) {
                cps_push(out, s[i++]); /* no match: '&' stays */
                continue;
            }
            uint32_t num = 0;
            for (; k < n && (hex ? is_xdigit(s[k]) : is_digit(s[k])); k++) {
                uint32_t d = is_digit(s[k]) ? s[k] - '0' : (s[k] | 0x20) - 'a' + 10;
                num = num > 0x10FFFF ? num : num * (hex ? 16 : 10) + d; /* saturates past U+10FFFF */
            }
            if (k < n && s[k] == ';') k++;
            const tok_u_subst *r = subst_find(tok_u_invalid_charrefs, tok_u_ninvalid_charrefs, num);
            if (r) cps_push_utf8(out, r->to);
            else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) cps_push(out, 0xFFFD);
            else if (!u32_in(tok_u_invalid_codepoints, tok_u_ninvalid_codepoints, num)) cps_push(out, num);
            i = k;
            continue;
        }
        size_t k = j;
        while (k < n && k - j < 32 && s[k] != '\t' && s[k] != '\n' && s[k] != '\f' && s[k] != ' ' && s[k] != '<' &&
               s[k] != '&' && s[k] != '#' && s[k] != ';')
            k++;
        if (k == j) {
            cps_push(out, s[i++]);
            continue;
        }
        size_t end = k < n && s[k] == ';' ? k + 1 : k; /* the match is s[i..end) */
        /* the name in ASCII; entity names are ASCII, so only the ASCII prefix can match */
        char name[40];
        size_t ascii = 0;
        while (j + ascii < end && s[j + ascii] < 0x80) {
            name[ascii] = (char)s[j + ascii];
            ascii++;
        }
        name[ascii] = 0;
        size_t len = end - j;
        const char *v = ascii == len ? entity_find(name) : NULL;
        size_t used = len;
        if (!v)
            for (size_t x = len - 1; x > 1; x--) {
                if (x > ascii) continue;
                char c = name[x];
                name[x] = 0;
                v = entity_find(name);
                name[x] = c;
                if (v) {
                    used = x;
                    break;
                }
            }
        if (v) {
            cps_push_utf8(out, v);
            for (size_t q = j + used; q < end; q++) cps_push(out, s[q]);
        } else {
            for (size_t q = i; q < end; q++) cps_push(out, s[q]);
        }
        i = end;
    }
}

/* ---- ftfy.fix_text, without its mojibake repair ---------------------------
 * Each step is one of ftfy's fixers, in ftfy's order; fix_segment repeats
 * them until nothing changes, as fix_and_explain does. */

static int is_alnum_ascii(uint32_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static const char *ftfy_entity_find(const char *name)
{
    return entity_find_in(tok_u_ftfy_entities, tok_u_nftfy_entities, name);
}

/* unescape_html: &#?[0-9A-Za-z]{1,24}; is an HTML5 name (or an upper-case
 * spelling of one), or a numeric reference that html.unescape decodes whole */
static void ftfy_unescape(const cps *in, cps *out)
{
    const uint32_t *s = in->v;
    size_t n = in->n;
    for (size_t i = 0; i < n;) {
        if (s[i] != '&') {
            cps_push(out, s[i++]);
            continue;
        }
        size_t st = i + 1 < n && s[i + 1] == '#' ? i + 2 : i + 1, len = 0;
        while (st + len < n && len < 25 && is_alnum_ascii(s[st + len])) len++;
        if (len < 1 || len > 24 || st + len >= n || s[st + len] != ';') {
            cps_push(out, s[i++]);
            continue;
        }
        size_t end = st + len + 1;
        char name[32];
        for (size_t q = i; q < end; q++) name[q - i] = (char)s[q];
        name[end - i] = 0;
        const char *v = ftfy_entity_find(name);
        if (v) {
            cps_push_utf8(out, v);
        } else if (s[i + 1] == '#') {
            cps sub = {(uint32_t *)s + i, end - i, end - i}, r = {0};
            html_unescape(&sub, &r);
            int semi = 0;
            for (size_t q = 0; q < r.n; q++) semi |= r.v[q] == ';';
            if (semi)
                for (size_t q = i; q < end; q++) cps_push(out, s[q]);
            else
                for (size_t q = 0; q < r.n; q++) cps_push(out, r.v[q]);
            free(r.v);
        } else {
            for (size_t q = i; q < end; q++) cps_push(out, s[q]);
        }
        i = end;
    }
}

/* fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes
 * (one table), then fix_line_breaks */
static void ftfy_chars(const cps *in, cps *out)
{
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        const tok_u_subst *s = c >= 0x80 ? subst_find(tok_u_ftfy, tok_u_nftfy, c) : NULL;
        if (s) cps_push_utf8(out, s->to);
        else cps_push(out, c);
    }
}

static void ftfy_line_breaks(const cps *in, cps *out)
{
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c == '\r' && i + 1 < in->n && in->v[i + 1] == '\n') continue;
        cps_push(out, c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85 ? '\n' : c);
    }
}

/* remove_terminal_escapes: ESC [ (\d|;)* [a-zA-Z], \d any decimal digit */
static void ftfy_ansi(const cps *in, cps *out)
{
    const uint32_t *s = in->v;
    size_t n = in->n;
    for (size_t i = 0; i < n;) {
        if (s[i] == 0x1B && i + 1 < n && s[i + 1] == '[') {
            size_t j = i + 2;
            while (j < n && (s[j] == ';' || (uflags(s[j]) & TOK_U_DECIMAL))) j++;
            if (j < n && s[j] < 0x80 && ((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z')) {
                i = j + 1;
                continue;
            }
        }
        cps_push(out, s[i++]);
    }
}

/* remove_control_chars */
static void ftfy_controls(const cps *in, cps *out)
{
    for (size_t i = 0; i < in->n; i++)
        if (!u32_in(tok_u_controls, tok_u_ncontrols, in->v[i])) cps_push(out, in->v[i]);
}

static int cps_eq(const cps *a, const cps *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

/* one line: the fixers until nothing changes; the result appended to res */
static void fix_segment(const uint32_t *seg, size_t n, int entities, cps *res)
{
    size_t i;
    for (i = 0; i < n; i++) { /* printable ASCII without '&': nothing to fix */
        uint32_t c = seg[i];
        if (!((c >= 0x20 && c < 0x7F && c != '&') || c == '\t' || c == '\n' || c == '\f')) break;
    }
    if (i == n) {
        for (i = 0; i < n; i++) cps_push(res, seg[i]);
        return;
    }
    cps orig = {0}, a = {0}, b = {0};
    for (i = 0; i < n; i++) cps_push(&a, seg[i]);
    for (int iter = 0; iter < 64; iter++) {
        orig.n = 0;
        for (i = 0; i < a.n; i++) cps_push(&orig, a.v[i]);
#define STEP(f)                                                                                                        \
    do {                                                                                                               \
        b.n = 0;                                                                                                       \
        f(&a, &b);                                                                                                     \
        cps t_ = a;                                                                                                    \
        a = b;                                                                                                         \
        b = t_;                                                                                                        \
    } while (0)
        if (entities) STEP(ftfy_unescape);
        STEP(ftfy_chars);
        STEP(ftfy_line_breaks);
        STEP(ftfy_ansi);
        STEP(ftfy_controls);
        STEP(nfc);
#undef STEP
        if (cps_eq(&a, &orig)) break;
    }
    for (i = 0; i < a.n; i++) cps_push(res, a.v[i]);
    free(orig.v);
    free(a.v);
    free(b.v);
}

/* fix_text: line by line (at most 10^6 code points each); HTML entities are
 * decoded until a line holds '<' ("auto"), and not after */
static void ftfy_fix(const cps *in, cps *res)
{
    int entities = 1;
    for (size_t pos = 0; pos < in->n;) {
        size_t end = pos;
        while (end < in->n && in->v[end] != '\n') end++;
        if (end < in->n) end++;
        if (end - pos > 1000000) end = pos + 1000000;
        for (size_t i = pos; i < end && entities; i++)
            if (in->v[i] == '<') entities = 0;
        fix_segment(in->v + pos, end - pos, entities, res);
        pos = end;
    }
}

/* str.strip(), then \s+ -> ' ', then str.strip() */
static void clean_space(const cps *in, cps *out)
{
    size_t a = 0, b = in->n;
    while (a < b && (uflags(in->v[a]) & TOK_U_PYSPACE)) a++;
    while (b > a && (uflags(in->v[b - 1]) & TOK_U_PYSPACE)) b--;
    size_t start = out->n;
    for (size_t i = a; i < b;) {
        if (uflags(in->v[i]) & TOK_U_RESPACE) {
            cps_push(out, ' ');
            while (i < b && (uflags(in->v[i]) & TOK_U_RESPACE)) i++;
        } else {
            cps_push(out, in->v[i++]);
        }
    }
    size_t x = start, y = out->n;
    while (x < y && (uflags(out->v[x]) & TOK_U_PYSPACE)) x++;
    while (y > x && (uflags(out->v[y - 1]) & TOK_U_PYSPACE)) y--;
    /* nothing kept (empty text): out->v may still be NULL, which memmove
     * must not be given even for 0 bytes */
    if (y > x && x > start) memmove(out->v + start, out->v + x, (y - x) * sizeof *out->v);
    out->n = start + (y - x);
}

/* CPython's final-sigma rule for U+03A3 at position i */
static uint32_t lower_sigma(const uint32_t *s, size_t n, size_t i)
{
    size_t j = i;
    unsigned f = 0;
    while (j > 0) {
        f = uflags(s[--j]);
        if (!(f & TOK_U_IGNORABLE)) break;
        f = 0;
    }
    int final = (f & TOK_U_CASED) && !(f & TOK_U_IGNORABLE);
    if (final)
        for (j = i + 1; j < n; j++) {
            f = uflags(s[j]);
            if (!(f & TOK_U_IGNORABLE)) {
                final = !(f & TOK_U_CASED);
                break;
            }
        }
    return final ? 0x3C2 : 0x3C3;
}

/* Python's str.lower() */
static void lower(const cps *in, cps *out)
{
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c < 0x80) {
            cps_push(out, c >= 'A' && c <= 'Z' ? c + 32 : c);
            continue;
        }
        if (c == 0x3A3) {
            cps_push(out, lower_sigma(in->v, in->n, i));
            continue;
        }
        size_t lo = 0, hi = tok_u_nlowers;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (tok_u_lowers[mid].cp < c) lo = mid + 1;
            else hi = mid;
        }
        if (lo < tok_u_nlowers && tok_u_lowers[lo].cp == c) {
            cps_push(out, tok_u_lowers[lo].lo0);
            if (tok_u_lowers[lo].lo1) cps_push(out, tok_u_lowers[lo].lo1);
        } else {
            cps_push(out, c);
        }
    }
}

/* the whole clean-up: decoded text in, cleaned lower-case code points out */
static int clean(const char *text, size_t len, cps *res, char *err)
{
    cps a = {0}, b = {0}, c = {0};
    if (utf8_decode(text, len, &a, err) != 0) {
        free(a.v);
        return -1;
    }
    ftfy_fix(&a, &c);
    free(a.v);
    a = c;
    b.n = 0;
    html_unescape(&a, &b);
    a.n = 0;
    html_unescape(&b, &a);
    b.n = 0;
    clean_space(&a, &b);
    lower(&b, res);
    free(a.v);
    free(b.v);
    return 0;
}

int tok_clean(const char *text, size_t len, char **out, size_t *outlen, char *err)
{
    cps c = {0};
    if (clean(text, len, &c, err) != 0) return -1;
    char *s = xmalloc(4 * c.n + 1);
    size_t n = 0;
    for (size_t i = 0; i < c.n; i++) n += utf8_put(s + n, c.v[i]);
    s[n] = 0;
    free(c.v);
    *out = s;
    *outlen = n;
    return 0;
}

/* ---- pre-tokenisation and BPE ------------------------------------------- */

/* c matches the ASCII letter or symbol a case-insensitively (as the regex
 * module's simple case folding: also U+017F for s, U+212A for k, ...) */
static int ci_eq(uint32_t c, char a)
{
    if (c == (uint32_t)a) return 1;
    if (a >= 'a' && a <= 'z') {
        if (c == (uint32_t)(a - 32)) return 1;
        if (c >= 0x80)
            for (size_t i = 0; i < tok_u_nfolds; i++)
                if (tok_u_folds[i].cp == c && tok_u_folds[i].ascii == a) return 1;
    }
    return 0;
}

static size_t match_lit(const uint32_t *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (k > n) return 0;
    for (size_t i = 0; i < k; i++)
        if (!ci_eq(s[i], lit[i])) return 0;
    return k;
}

/* BPE of one pre-token (UTF-8 bytes w[0..n), n >= 1) appended to ids */
static void bpe_word(tok *t, const char *w, size_t n, tok_ids *ids)
{
    const int32_t *hit = smap_get(&t->cache, w, n);
    if (hit) {
        const int32_t *c = t->cache_ids.v + *hit;
        for (int32_t i = 0; i < c[0]; i++) ids_push(ids, c[1 + i]);
        return;
    }
    int32_t stack[64];
    int32_t *sym = n <= 64 ? stack : xmalloc(n * sizeof *sym);
    size_t m = n;
    for (size_t i = 0; i < n; i++) sym[i] = i + 1 < n ? t->byte_id[(uint8_t)w[i]] : t->byte_end_id[(uint8_t)w[i]];
    while (m > 1) {
        int32_t best = INT32_MAX, a = 0, b = 0, merged = 0, mg;
        for (size_t i = 0; i + 1 < m; i++) {
            int32_t r = pair_rank(t, sym[i], sym[i + 1], &mg);
            if (r < best) best = r, a = sym[i], b = sym[i + 1], merged = mg;
        }
        if (best == INT32_MAX) break;
        size_t k = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && sym[i] == a && sym[i + 1] == b) {
                sym[k++] = merged;
                i += 2;
            } else {
                sym[k++] = sym[i++];
            }
        }
        m = k;
    }
    for (size_t i = 0; i < m; i++) ids_push(ids, sym[i]);
    if (t->cache.n < TOK_CACHE_MAX) {
        smap_put(&t->cache, w, n, (int32_t)t->cache_ids.n);
        ids_push(&t->cache_ids, (int32_t)m);
        for (size_t i = 0; i < m; i++) ids_push(&t->cache_ids, sym[i]);
    }
    if (sym != stack) free(sym);
}

int tok_encode(tok *t, const char *text, size_t len, tok_ids *ids, char *err)
{
    cps c = {0};
    if (clean(text, len, &c, err) != 0) return -1;
    const uint32_t *s = c.v;
    size_t n = c.n, i = 0;
    char *word = xmalloc(4 * n + 1);
    while (i < n) {
        size_t k = 0;
        int special = 0;
        if (s[i] == '<') {
            if ((k = match_lit(s + i, n - i, "<|startoftext|>")) || (k = match_lit(s + i, n - i, "<|endoftext|>")))
                special = 1;
        } else if (s[i] == '\'' && i + 1 < n) {
            static const char *const contr[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
            for (int q = 0; q < 7 && !k; q++) k = match_lit(s + i, n - i, contr[q]);
        }
        if (!k) {
            unsigned cls = uflags(s[i]) & TOK_U_CLS;
            if (cls == TOK_U_SKIP) {
                i++;
                continue;
            }
            k = 1;
            if (cls != TOK_U_NUMBER)
                while (i + k < n && (uflags(s[i + k]) & TOK_U_CLS) == cls) k++;
        }
        size_t wn = 0;
        for (size_t q = 0; q < k; q++) wn += utf8_put(word + wn, s[i + q]);
        /* the literal special tokens are in simple_tokenizer's BPE cache */
        if (special && wn == 15 && memcmp(word, "<|startoftext|>", 15) == 0) ids_push(ids, t->sot);
        else if (special && wn == 13 && memcmp(word, "<|endoftext|>", 13) == 0) ids_push(ids, t->eot);
        else bpe_word(t, word, wn, ids);
        i += k;
    }
    free(word);
    free(c.v);
    return 0;
}

int tok_tokenize(tok *t, const char *text, size_t len, int ctx, int truncate, int32_t *out, char *err)
{
    if (ctx < 2) return vl_error(err, "context length %d: needs at least 2 positions", ctx);
    tok_ids ids = {0};
    ids_push(&ids, t->sot);
    if (tok_encode(t, text, len, &ids, err) != 0) {
        free(ids.v);
        return -1;
    }
    ids_push(&ids, t->eot);
    if (ids.n > (size_t)ctx) {
        if (!truncate) {
            vl_error(err, "%zu tokens: longer than the context of %d (the text would be truncated)", ids.n, ctx);
            free(ids.v);
            return -1;
        }
        ids.n = (size_t)ctx;
        ids.v[ctx - 1] = t->eot;
    }
    memcpy(out, ids.v, ids.n * sizeof *out);
    for (size_t i = ids.n; i < (size_t)ctx; i++) out[i] = 0;
    int n = (int)ids.n;
    free(ids.v);
    return n;
}
