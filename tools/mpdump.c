/* mpdump: shows record streams as JSON Lines, one line per header, item and
 * trailer, so that a human (or jq) can read them.
 *
 * Vectors (`vec`, `logits`: f32le) become arrays of numbers printed with the
 * fewest digits that read back to the same float; pixels (`pix`: u8) become
 * arrays of integers. Unless --full is given, arrays longer than a few values
 * are shortened to their first values and a string "... N more". Other bins
 * are shown as {"bin": BYTES, "hex": "..."}. The framing is checked as by
 * every reader (a truncated or foreign stream is an error after the lines
 * already printed); items are shown as they are, without schema checks. */
#include "common.h"
#include "json.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: mpdump [--full] [--head N] [FILE ...]\n"
    "  --full      every value of every payload (default: the first few)\n"
    "  --head N    the header and the first N items of each input only\n"
    "  -h, --help  this text\n"
    "  --version   the version\n";

static int full;
#define SHORT_F32 8  /* values shown of a shortened f32 array */
#define SHORT_U8 16  /* values shown of a shortened u8 array */
#define SHORT_HEX 32 /* bytes shown of a shortened other bin */

/* the shortest decimal that reads back as the same float / double */
static void put_f32(json_buf *b, float f) {
    char tmp[32];
    if (!isfinite(f)) {
        json_buf_puts(b, isnan(f) ? "\"NaN\"" : f > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    for (int p = 6; p <= 9; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, (double)f);
        if (strtof(tmp, NULL) == f) break;
    }
    json_buf_puts(b, tmp);
}

static void put_f64(json_buf *b, double f) {
    char tmp[40];
    if (!isfinite(f)) {
        json_buf_puts(b, isnan(f) ? "\"NaN\"" : f > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    for (int p = 15; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, f);
        if (strtod(tmp, NULL) == f) break;
    }
    json_buf_puts(b, tmp);
}

static void put_more(json_buf *b, size_t more) {
    json_buf_printf(b, ", \"... %zu more\"", more);
}

static void put_hex(json_buf *b, const uint8_t *p, size_t n) {
    size_t show = full || n <= SHORT_HEX ? n : SHORT_HEX;
    json_buf_printf(b, "{\"bin\": %zu, \"hex\": \"", n);
    for (size_t i = 0; i < show; i++)
        json_buf_printf(b, "%02x", p[i]);
    json_buf_puts(b, show < n ? "...\"}" : "\"}");
}

enum { BIN_HEX, BIN_F32, BIN_U8 };

static void put_value(json_buf *b, const mp_val *v, int bin_as);

static void put_bin(json_buf *b, const mp_val *v, int bin_as) {
    const uint8_t *p = v->v.p;
    if (bin_as == BIN_F32 && v->len % 4 == 0) {
        size_t n = v->len / 4, show = full || n <= SHORT_F32 ? n : SHORT_F32;
        json_buf_puts(b, "[");
        for (size_t i = 0; i < show; i++) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            if (i) json_buf_puts(b, ", ");
            put_f32(b, f);
        }
        if (show < n) put_more(b, n - show);
        json_buf_puts(b, "]");
    } else if (bin_as == BIN_U8) {
        size_t n = v->len, show = full || n <= SHORT_U8 ? n : SHORT_U8;
        json_buf_puts(b, "[");
        for (size_t i = 0; i < show; i++)
            json_buf_printf(b, "%s%u", i ? ", " : "", p[i]);
        if (show < n) put_more(b, n - show);
        json_buf_puts(b, "]");
    } else {
        put_hex(b, p, v->len);
    }
}

/* how a map member's bin is shown, by its key */
static int bin_kind(const mp_val *key) {
    if (mp_str_eq(key, "vec") || mp_str_eq(key, "logits")) return BIN_F32;
    if (mp_str_eq(key, "pix")) return BIN_U8;
    return BIN_HEX;
}

static void put_value(json_buf *b, const mp_val *v, int bin_as) {
    switch (v->type) {
    case MP_NIL:
        json_buf_puts(b, "null");
        break;
    case MP_BOOL:
        json_buf_puts(b, v->v.b ? "true" : "false");
        break;
    case MP_INT:
        json_buf_printf(b, "%" PRId64, v->v.i);
        break;
    case MP_UINT:
        json_buf_printf(b, "%" PRIu64, v->v.u);
        break;
    case MP_FLOAT:
        put_f64(b, v->v.f);
        break;
    case MP_STR:
        json_buf_str(b, v->v.s, v->len);
        break;
    case MP_BIN:
        put_bin(b, v, bin_as);
        break;
    case MP_EXT:
        json_buf_printf(b, "{\"ext\": %d, \"data\": ", v->ext_type);
        put_hex(b, v->v.p, v->len);
        json_buf_puts(b, "}");
        break;
    case MP_ARRAY:
        json_buf_puts(b, "[");
        for (uint32_t i = 0; i < v->len; i++) {
            if (i) json_buf_puts(b, ", ");
            put_value(b, &v->v.a[i], BIN_HEX);
        }
        json_buf_puts(b, "]");
        break;
    case MP_MAP:
        json_buf_puts(b, "{");
        for (uint32_t i = 0; i < v->len; i++) {
            const mp_val *k = &v->v.a[2 * i];
            if (i) json_buf_puts(b, ", ");
            if (k->type == MP_STR) {
                put_value(b, k, BIN_HEX);
            } else { /* JSON keys are strings: show the key's JSON text as one */
                json_buf kb = {0};
                put_value(&kb, k, BIN_HEX);
                json_buf_str(b, kb.p ? kb.p : "", kb.len);
                free(kb.p);
            }
            json_buf_puts(b, ": ");
            put_value(b, &v->v.a[2 * i + 1], bin_kind(k));
        }
        json_buf_puts(b, "}");
        break;
    }
}

static void emit(json_buf *b, const mp_val *v) {
    b->len = 0;
    put_value(b, v, BIN_HEX);
    json_buf_puts(b, "\n");
    if (fwrite(b->p, 1, b->len, stdout) != b->len) stdout_done();
}

int main(int argc, char **argv) {
    tool_init("mpdump");
    long long head = -1;
    static const struct option opts[] = {{"full", no_argument, 0, 'f'},
                                         {"head", required_argument, 0, 'n'},
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            full = 1;
            break;
        case 'n':
            head = parse_int(USAGE, "--head", optarg, 0, INT64_MAX);
            break;
        default:
            tool_option(c, USAGE, NULL);
        }
    }
    int nin;
    char **inputs = input_list(argc, argv, &nin);

    json_buf b = {0};
    for (int i = 0; i < nin; i++) {
        sr *r = open_stream(inputs[i]);
        if (sr_header(r, NULL) != 0) die(1, "%s", r->err);
        int more;
        do {
            emit(&b, &r->header);
            const mp_val *item;
            int rc;
            long long shown = 0;
            while ((rc = sr_next(r, &item)) == 1) {
                if (head >= 0 && shown >= head) break;
                emit(&b, item);
                shown++;
            }
            if (rc == 1) { /* --head reached: the rest is not read */
                more = 0;
                break;
            }
            if (rc < 0) die(1, "%s", r->err);
            emit(&b, &r->trailer);
            more = sr_next_stream(r, NULL);
            if (more < 0) die(1, "%s", r->err);
        } while (more == 1);
        close_stream(r);
    }
    free(b.p);
    stdout_done();
    return 0;
}
