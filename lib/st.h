/* st: safetensors files. The reader maps the file, parses and checks the JSON
 * header (every offset and size bounded by the file) and hands out tensors,
 * converting F32/F16/BF16 to float on request. The writer collects tensors and
 * metadata and writes them atomically (temporary file, fsync, rename). */
#ifndef VL_ST_H
#define VL_ST_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL, ST_U16, ST_U32, ST_U64, ST_F8_E4M3, ST_F8_E5M2, ST_NDTYPES };

typedef struct {
    char *name;
    int dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const uint8_t *data; /* into the mapping */
} st_tensor;

typedef struct {
    char *path;
    int n;
    st_tensor *t; /* sorted by name */
    int nmeta;
    char **meta_key, **meta_val;
    void *map;
    size_t size;
} st_file;

const char *st_dtype_name(int dtype);
size_t st_dtype_size(int dtype);

/* Opens and checks path. Returns 0, or -1 with err naming the file and the fault. */
int st_open(st_file *f, const char *path, char *err);
/* Same checks on a buffer (for tests and fuzzing); buf must outlive f. */
int st_parse(st_file *f, const void *buf, size_t size, const char *name, char *err);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key);

/* Converts a F32/F16/BF16 tensor into out (numel floats). -1 for other dtypes. */
int st_to_f32(const st_tensor *t, float *out);
/* The loaders' conversion: st_to_f32, then every value must be finite (a
 * weight of NaN or infinity would make every output NaN). Returns 0, or -1
 * with err naming f, the tensor and the first bad element, or the dtype
 * that is not F32, F16 or BF16. */
int st_read_f32(const st_file *f, const st_tensor *t, float *out, char *err);
/* -1 with err ("FILE: tensor 'NAME': NaN at [2, 5]") when one of the numel
 * values v of tensor t of f is not finite, else 0: for loaders that copy the
 * bytes themselves. */
int st_check_finite(const st_file *f, const st_tensor *t, const float *v, char *err);
/* Finds name, checks its shape (ndim dims; a -1 dim matches any) and returns a
 * freshly allocated float copy, or NULL with err naming the tensor. */
float *st_load_f32(const st_file *f, const char *name, int ndim, const int64_t *shape, char *err);
/* Formats a shape as "[3, 224, 224]". */
const char *st_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* Writer. Data pointers must stay valid until stw_write. */
typedef struct stw stw;
stw *stw_new(void);
void stw_add(stw *w, const char *name, int dtype, int ndim, const int64_t *shape, const void *data);
void stw_meta(stw *w, const char *key, const char *val);
int stw_write(stw *w, const char *path, char *err);
void stw_free(stw *w);

#endif
