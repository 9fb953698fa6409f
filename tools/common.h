/* common: what every vl2v program shares: messages in `tool: where: what`
 * form, usage errors, number parsing, progress on stderr, and opening the
 * input and output streams (output files are written atomically). */
#ifndef VL_TOOL_COMMON_H
#define VL_TOOL_COMMON_H

#include "stream.h"

#include <getopt.h>
#include <stdint.h>
#include <stdnoreturn.h>

extern const char *prog;
extern int tool_verbose;

/* Sets the program name for messages. */
void tool_init(const char *name);
void warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports the error, removes the pending output temporaries and exits with
 * status. Safe from any thread: the first caller reports and exits, a later
 * one (another thread) waits for that exit without a word. */
noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "usage: ..." to stderr and exits 2 (bad arguments). */
noreturn void usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An option getopt_long has already complained about: usage, exit 2. */
noreturn void usage_bad(const char *usage);
/* --help: the usage text on stdout, exit 0. */
noreturn void usage_help(const char *usage);
/* --version: "PROG (vl2v) VERSION" on stdout, exit 0. */
noreturn void version_exit(void);

/* Options several tools share. A tool lists those it takes in its
 * getopt_long table (OPT_OUTPUT, OPT_MAX_ERRORS, OPT_VERBOSE, OPT_HELP, then
 * OPT_VERSION, then OPT_END) and passes every option its own switch does not
 * handle to tool_option, which fills o, prints --help or --version (exit 0)
 * or rejects the option (exit 2). Only -o, -v and -h have short forms. */
enum { OPT_MAX_ERRORS_VAL = 0x100, OPT_VERSION_VAL };
#define OPT_OUTPUT {"output", required_argument, 0, 'o'}
#define OPT_MAX_ERRORS {"max-errors", required_argument, 0, OPT_MAX_ERRORS_VAL}
#define OPT_VERBOSE {"verbose", no_argument, 0, 'v'}
#define OPT_HELP {"help", no_argument, 0, 'h'}
#define OPT_VERSION {"version", no_argument, 0, OPT_VERSION_VAL}
#define OPT_END {0, 0, 0, 0}
typedef struct {
    const char *output;   /* -o FILE; NULL: stdout */
    long long max_errors; /* --max-errors N (default 0) */
} tool_opts;
void tool_option(int c, const char *usage, tool_opts *o);

/* The input files named after the options, or "-" (stdin) when there are none. */
char **input_list(int argc, char **argv, int *n);

/* Option values; a bad value is a usage error naming the option. Integers
 * are decimal (leading zeros allowed) or hexadecimal with 0x. */
long long parse_int(const char *usage, const char *opt, const char *s, long long lo, long long hi);
double parse_double(const char *usage, const char *opt, const char *s, double lo, double hi);

/* Progress on stderr, shown when it is a terminal or -v was given: a run
 * that handles DONE items of a kind (UNIT: "images", "records") calls
 * progress_start once (TOTAL: how many there will be, 0 when unknown),
 * progress_count after each batch (DONE kept and DROPPED dropped so far; the first line at once, then at most one
 * a second; with the rate, and the fraction done and an ETA where the total
 * or the input file's size (progress_input) tells them) and progress_end
 * once at the end, which always prints the totals: records, dropped, rate,
 * elapsed. fmt (or NULL) adds a tool's own figures after a ';'. dropped
 * PROGRESS_NO_DROPS leaves the dropped count out (training steps). */
#define PROGRESS_NO_DROPS UINT64_MAX
void progress_start(const char *unit, uint64_t total);
/* The input is read from fd: when it is a regular file, its offset over its
 * size gives the fraction done where no total was given. */
void progress_input(int fd);
void progress_count(uint64_t done, uint64_t dropped, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void progress_end(uint64_t done, uint64_t dropped, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Standard input read whole (for the inputs that are read whole, a .npy or
 * a safetensors file: "-" as the others); *len set. Dies on a read error. */
uint8_t *read_stdin(size_t *len);

/* Opens path for reading ("-" or NULL: stdin) and returns a stream reader
 * named after it, or dies. close_stream closes the file and frees r. */
sr *open_stream(const char *path);
void close_stream(sr *r);

/* Writes r's header to s as it is, its history extended by argv: for the
 * tools that pass items through untouched (mpcat, mpselect). Dies on a
 * write error. */
void header_pass_on(sw *s, sr *r, int argc, char **argv);

/* Dropped items. drop_item warns with the message (which names the item and
 * says it was dropped), counts it in *dropped and returns 1 once more than
 * max_errors have been dropped. die_dropped is the failure that follows:
 * exit 1, the output left without its trailer and an -o file not written,
 * so that nothing downstream takes the stream for complete. */
int drop_item(uint64_t *dropped, long long max_errors, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
noreturn void die_dropped(uint64_t dropped, long long max_errors);
/* The two as a bad-item callback (stream_bad_fn: embed_stream,
 * stream_matrix_read) over a count and its limit: each message is warned
 * with ": dropped" and counted; one too many is die_dropped. */
typedef struct {
    uint64_t dropped;
    long long max_errors;
} tool_drops;
int tool_drop_bad(void *drops, const char *msg);

/* A data file shipped with the tools (share/ in the sources, installed in
 * $(PREFIX)/share/vl2v): DIR/../share/vl2v/NAME, else DIR/../share/NAME,
 * where DIR holds this program's executable (/proc/self/exe, links
 * resolved). Returns the path (malloc'ed) of the first that is a readable
 * file, or NULL. */
char *tool_share_file(const char *name);

/* Flushes stdout; a write error there (a full disk, a closed pipe) is fatal. */
void stdout_done(void);

/* A temporary output file to remove when the program dies: by die(), or by
 * SIGINT, SIGTERM or SIGHUP. tool_pending_done forgets it (once committed).
 * NULL (an output written in place) is no temporary: both ignore it. */
void tool_pending(const char *tmp);
void tool_pending_done(const char *tmp);

/* Output: stdout, or PATH written atomically (renamed into place only by
 * output_commit, removed if the program dies first) when it is a regular
 * file or new, in place when it is a device, a FIFO or a descriptor
 * (/dev/null, /dev/stdout: vl_afile_open). A stream is never written to a
 * terminal (exit 2). */
typedef struct {
    int fd;
    vl_afile af;
    int is_file;
} tool_out;
void output_open(tool_out *o, const char *path);
/* The same for text output (a manifest), which may go to a terminal. */
void output_open_text(tool_out *o, const char *path);
/* Finishes the stream (checks the final flush) and commits the file; dies on error. */
void output_commit(tool_out *o, sw *s);
/* Commits the file (written through o->af.fp, checked), when there is one; dies on error. */
void output_close(tool_out *o);

#endif
