/* manifest: reading and writing TSV image manifests (see manifest.h). */
#include "manifest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const MF_COLUMNS[MF_NCOLS] = {"id", "path", "label", "class", "domain", "split"};

/* a bound on one line, so a binary file fed by mistake cannot eat memory */
#define MF_MAX_LINE (1 << 20)

void mf_open(mf_reader *m, FILE *fp, const char *name)
{
    memset(m, 0, sizeof(*m));
    m->fp = fp;
    m->name = xstrdup(name);
    for (int i = 0; i < MF_NCOLS; i++) m->col[i] = i;
}

static void held_free(mf_reader *m)
{
    for (int i = 0; i < m->nheld; i++) free(m->held[i]);
    free(m->held);
    free(m->held_line);
    m->held = NULL;
    m->held_line = NULL;
    m->nheld = m->iheld = 0;
}

/* Keeps line (taken over) to be read again. */
static void hold(mf_reader *m, char *line)
{
    m->held = xrealloc(m->held, (size_t)(m->nheld + 1) * sizeof *m->held);
    m->held_line = xrealloc(m->held_line, (size_t)(m->nheld + 1) * sizeof *m->held_line);
    m->held[m->nheld] = line;
    m->held_line[m->nheld++] = m->line;
}

void mf_close(mf_reader *m)
{
    held_free(m);
    free(m->name);
    free(m->header);
    free(m->buf);
    memset(m, 0, sizeof(*m));
}

/* Reads one line without its newline into m->buf; 1, 0 at EOF, -1 on error.
 * At most MF_MAX_LINE bytes are kept: the rest of a longer line is read and
 * discarded (so that a huge or binary line costs no memory, and a failed
 * allocation can never pass for the end of the manifest). */
static int read_line(mf_reader *m, size_t *len, char *err)
{
    if (!m->buf) {
        m->cap = 4096;
        m->buf = xmalloc(m->cap);
    }
    size_t n = 0;
    int c, too_long = 0;
    while ((c = getc_unlocked(m->fp)) != EOF && c != '\n') {
        if (n >= MF_MAX_LINE) {
            too_long = 1;
            continue;
        }
        if (n + 1 >= m->cap) m->buf = xrealloc(m->buf, m->cap *= 2);
        m->buf[n++] = (char)c;
    }
    if (c == EOF && ferror(m->fp)) return vl_error(err, "%s: %s", m->name, strerror(errno));
    if (c == EOF && n == 0) return 0;
    m->line++;
    m->buf[n] = 0;
    if (too_long)
        return vl_error(err, "%s:%llu: line longer than %d bytes", m->name, (unsigned long long)m->line,
                        MF_MAX_LINE);
    if (n && m->buf[n - 1] == '\r') m->buf[--n] = 0;
    if (memchr(m->buf, 0, n))
        return vl_error(err, "%s:%llu: NUL byte in line (not a text manifest?)", m->name,
                        (unsigned long long)m->line);
    *len = n;
    return 1;
}

/* Splits buf on tabs in place; returns the number of fields (at most max). */
static int split_tabs(char *buf, char **f, int max)
{
    int n = 0;
    char *p = buf;
    for (;;) {
        if (n < max) f[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = 0;
        p = t + 1;
    }
    return n;
}

#define MF_MAX_FIELDS 64

/* The next line into m->buf: a held one first, then the file's (read_line's
 * results). */
static int next_line(mf_reader *m, size_t *len, char *err)
{
    if (m->started && m->iheld < m->nheld) {
        size_t n = strlen(m->held[m->iheld]);
        if (n + 1 > m->cap) m->buf = xrealloc(m->buf, m->cap = n + 1);
        memcpy(m->buf, m->held[m->iheld], n + 1);
        m->line = m->held_line[m->iheld++];
        if (m->iheld == m->nheld) {
            /* the last one held is the last one read: m->line is the file's again */
            held_free(m);
        }
        *len = n;
        return 1;
    }
    return read_line(m, len, err);
}

int mf_next(mf_reader *m, mf_row *row, char *err)
{
    char *f[MF_MAX_FIELDS];
    for (;;) {
        size_t len = 0;
        int rc = next_line(m, &len, err);
        if (rc == 0 && !m->started && m->nheld) {
            /* only '#' lines and no header: they are rows */
            m->started = 1;
            continue;
        }
        if (rc == 0) return 0;
        if (rc < 0) return ferror(m->fp) ? -2 : -1;
        if (len == 0) continue;
        if (!m->started && m->buf[0] == '#') {
            hold(m, xstrdup(m->buf));
            continue;
        }
        /* a repeated header (parallel --pipe --header 1, or concatenated
         * manifests) is skipped */
        if (m->header && strcmp(m->buf, m->header) == 0) continue;
        char *line = m->started ? NULL : xstrdup(m->buf);
        int nf = split_tabs(m->buf, f, MF_MAX_FIELDS);
        if (!m->started) {
            m->started = 1;
            int col[MF_NCOLS];
            for (int c = 0; c < MF_NCOLS; c++) col[c] = -1;
            for (int i = 0; i < nf; i++)
                for (int c = 0; c < MF_NCOLS; c++)
                    if (strcmp(f[i], MF_COLUMNS[c]) == 0 && col[c] < 0) col[c] = i;
            if (col[MF_ID] >= 0 && col[MF_PATH] >= 0) {
                memcpy(m->col, col, sizeof(col));
                m->header = line;
                held_free(m); /* comments before the header */
                continue;
            }
            if (col[MF_ID] == 0 || col[MF_PATH] >= 0) {
                free(line);
                return vl_error(err, "%s:%llu: the header must name both an 'id' and a 'path' column", m->name,
                                (unsigned long long)m->line) - 1;
            }
            if (m->nheld) {
                /* no header: the '#' lines held were rows, read before this one */
                hold(m, line);
                continue;
            }
            free(line);
        }
        /* the standard header line where no header came first */
        if (!m->header && strcmp(f[0], "id") == 0 && nf > 1 && strcmp(f[1], "path") == 0) continue;
        const char *v[MF_NCOLS];
        for (int c = 0; c < MF_NCOLS; c++) v[c] = m->col[c] >= 0 && m->col[c] < nf && *f[m->col[c]] ? f[m->col[c]] : NULL;
        memset(row, 0, sizeof(*row));
        row->line = m->line;
        if (!v[MF_ID] || !v[MF_PATH])
            return vl_error(err, "%s:%llu: %s", m->name, (unsigned long long)m->line,
                            v[MF_ID] ? "empty path" : "empty id");
        row->id = v[MF_ID];
        row->path = v[MF_PATH];
        row->cls = v[MF_CLASS];
        row->domain = v[MF_DOMAIN];
        row->split = v[MF_SPLIT];
        row->label = -1;
        if (v[MF_LABEL]) {
            char *end;
            errno = 0;
            long long x = strtoll(v[MF_LABEL], &end, 10);
            if (errno || *end || x < 0 || x > INT32_MAX)
                return vl_error(err, "%s:%llu: id '%s': label '%s' is not a non-negative integer", m->name,
                                (unsigned long long)m->line, row->id, v[MF_LABEL]);
            row->label = x;
        }
        return 1;
    }
}

void mf_write_header(FILE *fp)
{
    for (int c = 0; c < MF_NCOLS; c++) fprintf(fp, "%s%c", MF_COLUMNS[c], c + 1 < MF_NCOLS ? '\t' : '\n');
}

int mf_write_row(FILE *fp, const mf_row *r, char *err)
{
    const char *s[] = {r->id, r->path, r->cls, r->domain, r->split};
    for (int i = 0; i < 5; i++)
        if (s[i] && strpbrk(s[i], "\t\n\r"))
            return vl_error(err, "'%s' holds a tab or newline, which a manifest cannot store", s[i]);
    if (!r->id || !r->path) return vl_error(err, "a manifest row needs an id and a path");
    fprintf(fp, "%s\t%s\t", r->id, r->path);
    if (r->label >= 0) fprintf(fp, "%lld", (long long)r->label);
    fprintf(fp, "\t%s\t%s\t%s\n", r->cls ? r->cls : "", r->domain ? r->domain : "", r->split ? r->split : "");
    return 0;
}
