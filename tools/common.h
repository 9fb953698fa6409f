/* common: what every vl2v program shares: messages in `tool: where: what`
 * form, usage errors, number parsing, progress on stderr, and opening the
 * input and output streams (output files are written atomically). */
#ifndef VL_TOOL_COMMON_H
#define VL_TOOL_COMMON_H

#include "stream.h"

#include <stdint.h>
#include <stdnoreturn.h>

extern const char *prog;
extern int tool_verbose;

/* Sets the program name for messages. */
void tool_init(const char *name);
void warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "usage: ..." to stderr and exits 2 (bad arguments). */
noreturn void usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An option getopt_long has already complained about: usage, exit 2. */
noreturn void usage_bad(const char *usage);
/* --help: the usage text on stdout, exit 0. */
noreturn void usage_help(const char *usage);

/* Option values; a bad value is a usage error naming the option. */
long long parse_int(const char *usage, const char *opt, const char *s, long long lo, long long hi);
double parse_double(const char *usage, const char *opt, const char *s, double lo, double hi);

/* Progress on stderr when it is a terminal or -v was given; rate-limited. */
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress_done(void);

/* Opens path for reading ("-" or NULL: stdin) and returns a stream reader
 * named after it, or dies. */
sr *open_stream(const char *path);

/* Output: stdout, or PATH written atomically (renamed into place only by
 * output_commit, removed if the program dies first). */
typedef struct {
    int fd;
    vl_afile af;
    int is_file;
} tool_out;
void output_open(tool_out *o, const char *path);
/* Finishes the stream (checks the final flush) and commits the file; dies on error. */
void output_commit(tool_out *o, sw *s);

#endif
