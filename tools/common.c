/* common: messages, option parsing, progress and stream set-up for the tools. */
#include "common.h"
#include "version.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *prog = "vl2v";
int tool_verbose;
/* output temporaries to remove if we die */
#define MAX_PENDING 8
static const char *volatile pending[MAX_PENDING];

static void remove_pending(void)
{
    for (int i = 0; i < MAX_PENDING; i++)
        if (pending[i]) unlink(pending[i]);
}

void tool_pending(const char *tmp)
{
    if (!tmp) return; /* an output written in place (vl_afile): nothing to remove */
    for (int i = 0; i < MAX_PENDING; i++)
        if (!pending[i]) {
            pending[i] = tmp;
            return;
        }
    abort(); /* programming error: more outputs than slots */
}

void tool_pending_done(const char *tmp)
{
    if (!tmp) return;
    for (int i = 0; i < MAX_PENDING; i++)
        if (pending[i] == tmp) pending[i] = NULL;
}

/* an interrupted run leaves no temporary behind; then dies of the signal */
static void on_signal(int sig)
{
    remove_pending();
    signal(sig, SIG_DFL);
    raise(sig);
}

void tool_init(const char *name)
{
    prog = name;
    /* a closed downstream pipe is reported as a write error, not a silent kill */
    signal(SIGPIPE, SIG_IGN);
    /* SIGABRT: running out of memory (util's oom) aborts */
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGABRT};
    const int nsigs = (int)(sizeof sigs / sizeof *sigs);
    for (int i = 0; i < nsigs; i++) {
        struct sigaction sa = {.sa_handler = on_signal};
        sigemptyset(&sa.sa_mask);
        for (int k = 0; k < nsigs; k++) sigaddset(&sa.sa_mask, sigs[k]);
        /* keep an ignored signal ignored (nohup, a shell's background job) */
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaction(sigs[i], &sa, NULL);
    }
}

/* a progress line without its newline is on the terminal; atomic: messages
 * may come from a second thread (teacher-embed --exec) */
static atomic_int progress_shown;

static void vmsg(const char *fmt, va_list ap)
{
    fflush(stdout);
    if (progress_shown) { /* the message replaces the progress line, which comes back on the next update */
        fputs("\r\033[K", stderr);
        progress_shown = 0;
    }
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void warnx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
}

/* set by the first die(): a program with two threads (teacher-embed
 * --exec) reports one error and exits once, and a second failure seen
 * meanwhile in the other thread waits for that exit */
static atomic_int dying;

void die(int status, const char *fmt, ...)
{
    if (atomic_exchange(&dying, 1))
        for (;;) pause();
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    remove_pending();
    exit(status);
}

void usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    fputs(usage, stderr);
    exit(2);
}

void usage_bad(const char *usage)
{
    fputs(usage, stderr);
    exit(2);
}

void usage_help(const char *usage)
{
    fputs(usage, stdout);
    stdout_done();
    exit(0);
}

void tool_option(int c, const char *usage, tool_opts *o)
{
    if (!o && (c == 'o' || c == OPT_MAX_ERRORS_VAL)) c = '?';
    switch (c) {
    case 'o': o->output = optarg; break;
    case OPT_MAX_ERRORS_VAL: o->max_errors = parse_int(usage, "--max-errors", optarg, 0, INT64_MAX); break;
    case 'v': tool_verbose = 1; break;
    case 'h': usage_help(usage);
    case OPT_VERSION_VAL: version_exit();
    default: usage_bad(usage);
    }
}

void version_exit(void)
{
    printf("%s (vl2v) %s\n", prog, VL2V_VERSION);
    stdout_done();
    exit(0);
}

char **input_list(int argc, char **argv, int *n)
{
    static char *stdin_only[] = {"-", NULL};
    *n = argc - optind;
    if (*n > 0) return argv + optind;
    *n = 1;
    return stdin_only;
}

int drop_item(uint64_t *dropped, long long max_errors, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    return ++*dropped > (uint64_t)max_errors;
}

void die_dropped(uint64_t dropped, long long max_errors)
{
    (void)dropped;
    die(1, "more than %lld items dropped (--max-errors %lld)", max_errors, max_errors);
}

char *tool_share_file(const char *name)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = 0;
    static const char *const under[] = {"share/vl2v", "share"};
    for (int i = 0; i < 2; i++) {
        size_t len = strlen(exe) + strlen(under[i]) + strlen(name) + 8;
        char *p = xmalloc(len);
        snprintf(p, len, "%s/../%s/%s", exe, under[i], name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, R_OK) == 0) return p;
        free(p);
    }
    return NULL;
}

int tool_drop_bad(void *drops, const char *msg)
{
    tool_drops *d = drops;
    if (drop_item(&d->dropped, d->max_errors, "%s: dropped", msg)) die_dropped(d->dropped, d->max_errors);
    return 0;
}

void stdout_done(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) die(1, "write error on stdout: %s", strerror(errno ? errno : EIO));
}

long long parse_int(const char *usage, const char *opt, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    /* decimal, or hexadecimal with 0x; a leading zero is not octal (--seed 010 is ten) */
    const char *digits = s + (*s == '-' || *s == '+');
    int base = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X') ? 16 : 10;
    long long v = strtoll(s, &end, base);
    if (errno || end == s || *end || v < lo || v > hi)
        usage_error(usage, "%s: '%s' is not an integer in [%lld, %lld]", opt, s, lo, hi);
    return v;
}

double parse_double(const char *usage, const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        usage_error(usage, "%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

/* progress state: one count per run */
static struct {
    int on;          /* stderr is a terminal or -v: -1 not yet known */
    int tty;
    const char *unit;
    uint64_t total;  /* 0: unknown */
    int fd;          /* a regular input file, or -1 */
    double t0, last; /* start, last line shown (0: none yet) */
} pg = {-1, 0, "items", 0, -1, 0, 0};

static int progress_on(void)
{
    if (pg.on < 0) {
        pg.tty = isatty(2);
        pg.on = pg.tty || tool_verbose;
    }
    return pg.on;
}

void progress_start(const char *unit, uint64_t total)
{
    pg.unit = unit;
    pg.total = total;
    pg.t0 = vl_now();
    pg.last = 0;
}

void progress_input(int fd)
{
    struct stat st;
    pg.fd = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 ? fd : -1;
}

/* the fraction done after handling n items (kept and dropped), or -1 when it is not known */
static double progress_fraction(uint64_t done)
{
    if (pg.total > 0) return done > pg.total ? 1 : (double)done / pg.total;
    if (pg.fd >= 0) {
        struct stat st;
        off_t at = lseek(pg.fd, 0, SEEK_CUR);
        if (at >= 0 && fstat(pg.fd, &st) == 0 && st.st_size > 0) return at > st.st_size ? 1 : (double)at / st.st_size;
    }
    return -1;
}

/* "N/TOTAL UNIT (P%), K dropped, R UNIT/s, E s elapsed[, ETA T s]" or, at
 * the end, "done: N UNIT, K dropped, R UNIT/s, E s elapsed"; then "; extra" */
static void progress_line(int final, uint64_t done, uint64_t dropped, const char *fmt, va_list ap)
{
    double now = vl_now();
    if (pg.t0 == 0) pg.t0 = now;
    double el = now - pg.t0;
    fprintf(stderr, "%s%s: %s%llu", pg.tty ? "\r" : "", prog, final ? "done: " : "", (unsigned long long)done);
    double f = final ? -1 : progress_fraction(done + (dropped != PROGRESS_NO_DROPS ? dropped : 0));
    if (!final && pg.total > 0) fprintf(stderr, "/%llu", (unsigned long long)pg.total);
    fprintf(stderr, " %s", pg.unit);
    if (f >= 0) fprintf(stderr, " (%.0f%%)", 100 * f);
    if (dropped != PROGRESS_NO_DROPS) fprintf(stderr, ", %llu dropped", (unsigned long long)dropped);
    fprintf(stderr, ", %.1f %s/s, %.1f s elapsed", el > 0 ? done / el : 0.0, pg.unit, el);
    if (f > 0 && f < 1) fprintf(stderr, ", ETA %.0f s", el * (1 - f) / f);
    if (fmt) {
        fputs("; ", stderr);
        vfprintf(stderr, fmt, ap);
    }
    if (pg.tty && !final) fputs("\033[K", stderr);
    else fputs(pg.tty ? "\033[K\n" : "\n", stderr);
    progress_shown = pg.tty && !final;
    pg.last = now;
}

void progress_count(uint64_t done, uint64_t dropped, const char *fmt, ...)
{
    if (!progress_on()) return;
    /* the first line at once, then at most one a second */
    if (pg.last != 0 && vl_now() - pg.last < 1.0) return;
    va_list ap;
    va_start(ap, fmt);
    progress_line(0, done, dropped, fmt, ap);
    va_end(ap);
}

void progress_end(uint64_t done, uint64_t dropped, const char *fmt, ...)
{
    if (!progress_on()) return;
    va_list ap;
    va_start(ap, fmt);
    progress_line(1, done, dropped, fmt, ap);
    va_end(ap);
}

uint8_t *read_stdin(size_t *len)
{
    /* fd 0 as it is (a pipe, a file at any offset): /dev/fd/0 would reopen a file from its start */
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) buf = xrealloc(buf, cap *= 2);
        ssize_t r = read(0, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die(1, "<stdin>: %s", strerror(errno));
        if (r == 0) break;
        n += (size_t)r;
    }
    *len = n;
    return buf;
}

sr *open_stream(const char *path)
{
    if (!path || strcmp(path, "-") == 0) return sr_open(0, "<stdin>");
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* no child process (teacher-embed's vendor) holds it */
    if (fd < 0) die(1, "%s: %s", path, strerror(errno));
    return sr_open(fd, path);
}

void header_pass_on(sw *s, sr *r, int argc, char **argv)
{
    sw_header_begin(s, r->schema_name, &r->header, argc, argv);
    for (uint32_t k = 0; k < r->header.len; k++) {
        const mp_val *key = &r->header.v.a[2 * k];
        if (mp_str_eq(key, "schema") || mp_str_eq(key, "version") || mp_str_eq(key, "history") ||
            mp_str_eq(key, "history_versions"))
            continue;
        mpw_value(&s->w, key);
        mpw_value(&s->w, &r->header.v.a[2 * k + 1]);
    }
    if (sw_header_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
}

void close_stream(sr *r)
{
    if (r->fd > 0) close(r->fd);
    sr_close(r);
}

static void open_out(tool_out *o, const char *path, int binary)
{
    memset(o, 0, sizeof(*o));
    if (!path || strcmp(path, "-") == 0) {
        /* a binary stream would only garble the screen */
        if (binary && isatty(1))
            die(2, "standard output is a terminal: redirect it, pipe it (e.g. into mpdump) or give -o FILE");
        o->fd = 1;
        return;
    }
    char err[VL_ERRLEN];
    if (vl_afile_open(&o->af, path, err) != 0) die(1, "%s", err);
    o->fd = fileno(o->af.fp); /* close-on-exec (vl_afile_open): teacher-embed's vendor never holds it */
    if (binary && !o->af.tmp && isatty(o->fd)) {
        vl_afile_abort(&o->af);
        die(2, "%s is a terminal: redirect the output, pipe it (e.g. into mpdump) or give -o FILE", path);
    }
    o->is_file = 1;
    tool_pending(o->af.tmp);
}

void output_open(tool_out *o, const char *path) { open_out(o, path, 1); }
void output_open_text(tool_out *o, const char *path) { open_out(o, path, 0); }

void output_close(tool_out *o)
{
    if (o->is_file) {
        char err[VL_ERRLEN];
        tool_pending_done(o->af.tmp);
        if (vl_afile_commit(&o->af, err) != 0) die(1, "%s", err);
        o->is_file = 0;
    }
}

void output_commit(tool_out *o, sw *s)
{
    if (s->w.err) die(1, "write error: %s", strerror(s->w.err));
    output_close(o);
}
