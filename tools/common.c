/* common: messages, option parsing, progress and stream set-up for the tools. */
#include "common.h"

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
    default: usage_bad(usage);
    }
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

static double last_progress;

void progress(const char *fmt, ...)
{
    static int tty = -1;
    if (tty < 0) tty = isatty(2);
    if (!tty && !tool_verbose) return;
    double now = vl_now();
    if (now - last_progress < 0.5) return;
    last_progress = now;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s%s: ", tty ? "\r" : "", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (tty) fputs("\033[K", stderr);
    else fputc('\n', stderr);
    progress_shown = tty;
}

void progress_done(void)
{
    if (progress_shown) fputc('\n', stderr);
    progress_shown = 0;
}

sr *open_stream(const char *path)
{
    if (!path || strcmp(path, "-") == 0) return sr_open(0, "<stdin>");
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* no child process (teacher-embed's vendor) holds it */
    if (fd < 0) die(1, "%s: %s", path, strerror(errno));
    return sr_open(fd, path);
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
