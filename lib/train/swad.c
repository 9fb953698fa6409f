/* swad: SWAD's LossValley rule over segment averages; see swad.h. */
#include "train/swad.h"

#include "json.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void swad_init(swad *s, size_t numel, int n_converge, int n_tolerance, double ratio)
{
    memset(s, 0, sizeof *s);
    s->n_converge = n_converge;
    s->n_tolerance = n_tolerance;
    s->ratio = ratio;
    s->conv = -1;
    s->first = 0;
    s->last = -1;
    s->numel = numel;
    s->K = n_converge > n_tolerance ? n_converge : n_tolerance;
    wavg_init(&s->open, numel);
    s->ring = xcalloc((size_t)s->K * (numel ? numel : 1), sizeof(float));
    s->avg = xcalloc(numel ? numel : 1, sizeof(float));
}

void swad_free(swad *s)
{
    free(s->loss);
    free(s->end);
    free(s->n);
    wavg_free(&s->open);
    free(s->ring);
    free(s->avg);
    memset(s, 0, sizeof *s);
}

void swad_update(swad *s, const float *x) { wavg_add(&s->open, x); }

/* Segment j (kept in the ring) joins the average: a running mean weighted
 * by iterates, so the result is the uniform mean of the iterates. */
static void join(swad *s, int j)
{
    const float *x = s->ring + (size_t)(j % s->K) * s->numel;
    if (s->avg_n == 0) {
        memcpy(s->avg, x, s->numel * sizeof(float));
    } else {
        float k = (float)((double)s->n[j] / (double)(s->avg_n + s->n[j]));
        for (size_t i = 0; i < s->numel; i++) s->avg[i] += (x[i] - s->avg[i]) * k;
    }
    s->avg_n += s->n[j];
    if (s->last < s->first) s->first = j;
    s->last = j;
}

static double min_loss(const swad *s, int from, int to)
{
    double m = s->loss[from];
    for (int j = from + 1; j <= to; j++)
        if (s->loss[j] < m) m = s->loss[j];
    return m;
}

static void converge(swad *s)
{
    int e = s->nseg - 1, Ns = s->n_converge, Ne = s->n_tolerance;
    if (e + 1 < Ns) return;
    int c = e - Ns + 1;
    double sum = 0;
    for (int j = c; j <= e; j++) {
        if (s->loss[j] < s->loss[c]) return; /* the oldest is not the least */
        sum += s->loss[j];
    }
    s->conv = c;
    s->threshold = (1.0 + s->ratio) * (sum / Ns);
    int lo = c - (Ne > Ns ? Ne - Ns : 0), first = c;
    if (lo < 0) lo = 0;
    while (first - 1 >= lo && !(s->loss[first - 1] > s->threshold)) first--;
    for (int j = first; j <= c; j++) join(s, j);
}

int swad_evaluate(swad *s, double loss, int64_t step)
{
    if (s->dead || s->open.n == 0) return s->dead;
    if (s->nseg == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 32;
        s->loss = xrealloc(s->loss, (size_t)s->cap * sizeof *s->loss);
        s->end = xrealloc(s->end, (size_t)s->cap * sizeof *s->end);
        s->n = xrealloc(s->n, (size_t)s->cap * sizeof *s->n);
    }
    int e = s->nseg++;
    s->loss[e] = loss;
    s->end[e] = step;
    s->n[e] = s->open.n;
    memcpy(s->ring + (size_t)(e % s->K) * s->numel, s->open.avg, s->numel * sizeof(float));
    wavg_reset(&s->open);
    if (s->conv < 0) converge(s);
    if (s->conv < 0) return 0;
    /* the lagged additions: segment j is decided by l_j .. l_j+Ne-1 */
    int Ne = s->n_tolerance;
    while (s->last + Ne <= e) {
        int j = s->last + 1;
        if (min_loss(s, j, j + Ne - 1) > s->threshold) {
            s->dead = e + 1;
            return 1;
        }
        join(s, j);
    }
    return 0;
}

const float *swad_finish(swad *s)
{
    if (s->nseg == 0) return NULL;
    if (s->conv < 0) {
        int e = s->nseg - 1;
        s->avg_n = 0;
        s->last = -1;
        join(s, e);
        return s->avg;
    }
    if (!s->dead)
        for (int j = s->last + 1; j < s->nseg && !(min_loss(s, j, s->nseg - 1) > s->threshold); j++) join(s, j);
    return s->avg;
}

int swad_converged(const swad *s) { return s->conv >= 0; }

int64_t swad_window(const swad *s, int64_t *from, int64_t *to)
{
    if (s->last < s->first) return 0;
    *from = s->end[s->first] - s->n[s->first] + 1;
    *to = s->end[s->last];
    return s->avg_n;
}

char *swad_state_json(const swad *s)
{
    json_buf b = {0};
    json_buf_printf(&b, "{\"n_converge\":%d,\"n_tolerance\":%d,\"ratio\":%.17g,\"conv\":%d,\"threshold\":%.17g,"
                        "\"first\":%d,\"last\":%d,\"dead\":%d,\"open_n\":%lld,\"avg_n\":%lld,\"segments\":[",
                    s->n_converge, s->n_tolerance, s->ratio, s->conv, s->threshold, s->first, s->last, s->dead,
                    (long long)s->open.n, (long long)s->avg_n);
    for (int j = 0; j < s->nseg; j++)
        json_buf_printf(&b, "%s[%.17g,%lld,%lld]", j ? "," : "", s->loss[j], (long long)s->end[j], (long long)s->n[j]);
    json_buf_puts(&b, "]}");
    return b.p;
}

int swad_extras(swad *s, ckpt_extra *x)
{
    x[0] = (ckpt_extra){"swad.open", s->open.avg, s->numel};
    x[1] = (ckpt_extra){"swad.segments", s->ring, (size_t)s->K * s->numel};
    x[2] = (ckpt_extra){"swad.average", s->avg, s->numel};
    return 3;
}

int swad_state_load(swad *s, const char *text, char *err)
{
    json *j = json_parse(text, strlen(text), err);
    if (!j) return -1;
    const json *seg = json_get(j, "segments");
    int ok = j->type == JSON_OBJ && seg && seg->type == JSON_ARR &&
             json_get_int(j, "n_converge", -1) == s->n_converge && json_get_int(j, "n_tolerance", -1) == s->n_tolerance &&
             json_get_num(j, "ratio", -1) == s->ratio;
    for (size_t i = 0; ok && i < seg->n; i++)
        ok = seg->items[i].type == JSON_ARR && seg->items[i].n == 3 && seg->items[i].items[1].is_int &&
             seg->items[i].items[2].is_int;
    if (!ok) {
        snprintf(err, VL_ERRLEN, "the SWAD state is not one of these settings (%d, %d, %g)", s->n_converge,
                 s->n_tolerance, s->ratio);
        json_free(j);
        return -1;
    }
    s->nseg = 0;
    s->cap = (int)seg->n + 32;
    s->loss = xrealloc(s->loss, (size_t)s->cap * sizeof *s->loss);
    s->end = xrealloc(s->end, (size_t)s->cap * sizeof *s->end);
    s->n = xrealloc(s->n, (size_t)s->cap * sizeof *s->n);
    for (size_t i = 0; i < seg->n; i++, s->nseg++) {
        s->loss[i] = seg->items[i].items[0].num;
        s->end[i] = seg->items[i].items[1].i;
        s->n[i] = seg->items[i].items[2].i;
    }
    s->conv = (int)json_get_int(j, "conv", -1);
    s->threshold = json_get_num(j, "threshold", 0);
    s->first = (int)json_get_int(j, "first", 0);
    s->last = (int)json_get_int(j, "last", -1);
    s->dead = (int)json_get_int(j, "dead", 0);
    s->open.n = json_get_int(j, "open_n", 0);
    s->avg_n = json_get_int(j, "avg_n", 0);
    json_free(j);
    return 0;
}
