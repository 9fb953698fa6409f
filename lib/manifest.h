/* manifest: the line-oriented list of images every pipeline starts from.
 * TSV, one image per line, columns
 *     id  path  label  class  domain  split
 * and any extra columns after them. The first line is a header naming the
 * columns (recognised by having fields "id" and "path"); columns may then
 * come in any order and only id and path are required. Without a header line
 * the columns are the six above in that order, so that a chunk cut from the
 * middle of a manifest (GNU parallel --pipe) reads the same; a line equal to
 * the header (parallel --pipe --header 1 repeats it) is skipped. Lines
 * starting with '#' before the header are comments; anywhere else (after
 * the header, or in a manifest without one) a '#' line is a row, so that an
 * id such as "#art/dog/1.jpg" (a folder named #art) is never lost. Fields
 * cannot hold tabs or newlines; an empty field means "unknown". */
#ifndef VL_MANIFEST_H
#define VL_MANIFEST_H

#include <stdint.h>
#include <stdio.h>

#include "util.h"

enum { MF_ID, MF_PATH, MF_LABEL, MF_CLASS, MF_DOMAIN, MF_SPLIT, MF_NCOLS };
extern const char *const MF_COLUMNS[MF_NCOLS];

/* One row; strings point into the reader's line buffer (valid until the
 * next mf_next) and are NULL when the column is absent or empty. */
typedef struct {
    const char *id, *path, *cls, *domain, *split;
    int64_t label; /* -1 when unknown */
    uint64_t line; /* line number in the manifest, from 1 */
} mf_row;

typedef struct {
    FILE *fp;
    char *name;
    char *buf;
    size_t cap;
    uint64_t line;
    int col[MF_NCOLS]; /* field index of each column, -1 if absent */
    int started;
    char *header; /* the header line, when there was one */
    /* '#' lines before the first other line: comments if that line is the
     * header, else rows, read again from here */
    char **held;
    uint64_t *held_line;
    int nheld, iheld;
} mf_reader;

/* Opens a reader on fp (not closed by mf_close); name is used in messages. */
void mf_open(mf_reader *m, FILE *fp, const char *name);
void mf_close(mf_reader *m);

/* Next row: 1 with *row set; 0 at the end; -1 with err for a bad row
 * ("NAME:LINE: what"), after which reading may continue; -2 with err for a
 * fatal problem (read error, a header without id or path). Blank lines and
 * the comments before the header are skipped. */
int mf_next(mf_reader *m, mf_row *row, char *err);

/* Writes the header line and rows; a field holding a tab or newline is
 * refused (-1 with err). Check ferror/fflush on fp at the end. */
void mf_write_header(FILE *fp);
int mf_write_row(FILE *fp, const mf_row *row, char *err);

#endif
