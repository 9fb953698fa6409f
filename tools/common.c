/* common: messages, option parsing, progress and stream set-up for the tools. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *prog = "vl2v";
int tool_verbose;
static const char *pending_tmp; /* an output temporary to remove if we die */

void tool_init(const char *name)
{
    prog = name;
    /* a closed downstream pipe is reported as a write error, not a silent kill */
    signal(SIGPIPE, SIG_IGN);
}

static void vmsg(const char *fmt, va_list ap)
{
    fflush(stdout);
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

void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    if (pending_tmp) unlink(pending_tmp);
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
    exit(0);
}

long long parse_int(const char *usage, const char *opt, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
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
static int progress_shown;

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
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(1, "%s: %s", path, strerror(errno));
    return sr_open(fd, path);
}

void output_open(tool_out *o, const char *path)
{
    memset(o, 0, sizeof(*o));
    if (!path || strcmp(path, "-") == 0) {
        o->fd = 1;
        return;
    }
    char err[VL_ERRLEN];
    if (vl_afile_open(&o->af, path, err) != 0) die(1, "%s", err);
    o->fd = fileno(o->af.fp);
    o->is_file = 1;
    pending_tmp = o->af.tmp;
}

void output_commit(tool_out *o, sw *s)
{
    if (s->w.err) die(1, "write error: %s", strerror(s->w.err));
    if (o->is_file) {
        char err[VL_ERRLEN];
        pending_tmp = NULL;
        if (vl_afile_commit(&o->af, err) != 0) die(1, "%s", err);
    }
}
