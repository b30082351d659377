/* Indexing: fc_gather (embedding lookup), fc_scatter_add (its adjoint), fc_one_hot.
 *
 * Every index is validated in a first pass, before any output is written, so a bad index leaves
 * the output as it was and nothing is ever addressed out of bounds. */
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"

/* FC_ERR_INDEX unless every idx[i], i < n, is in [0, limit). */
static int check_indices(const int64_t* idx, int64_t n, int64_t limit)
{
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
        bad |= idx[i] < 0 || idx[i] >= limit; /* no early exit: the loop vectorises */
    }
    return bad ? FC_ERR_INDEX : FC_OK;
}

/* Checks the sizes shared by gather and scatter: n_idx rows of row_len elements on one side,
 * `rows` rows on the other; *small and *big are their element counts. */
static int check_tables(int dtype, int64_t n_idx, int64_t rows, int64_t row_len, int64_t* n_small, int64_t* n_big)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    const int64_t elem = ku_dtype_size(dtype);
    *n_small = ku_mul(n_idx, row_len);
    *n_big = ku_mul(rows, row_len);
    if (*n_small < 0 || *n_big < 0 || ku_mul(*n_small, elem) < 0 || ku_mul(*n_big, elem) < 0) {
        return FC_ERR_SIZE;
    }
    return FC_OK;
}

int fc_gather(int dtype, int64_t n_idx, const int64_t* idx, int64_t rows, int64_t row_len, const void* table,
              void* out)
{
    int64_t n_out, n_table;
    int status = check_tables(dtype, n_idx, rows, row_len, &n_out, &n_table);
    if (status != FC_OK) {
        return status;
    }
    if (ku_bad_ptr(idx, n_idx) || ku_bad_ptr(table, n_table) || ku_bad_ptr(out, n_out)) {
        return FC_ERR_NULL;
    }
    status = check_indices(idx, n_idx, rows);
    if (status != FC_OK || n_out == 0) {
        return status;
    }
    const size_t row_bytes = (size_t)(row_len * ku_dtype_size(dtype));
    const char* t = (const char*)table;
    char* o = (char*)out;
    for (int64_t i = 0; i < n_idx; ++i) {
        memcpy(o + (size_t)i * row_bytes, t + (size_t)idx[i] * row_bytes, row_bytes);
    }
    return FC_OK;
}

#define SCATTER_LOOP(T, ADD)                                                                       \
    {                                                                                              \
        const T* s = (const T*)src;                                                                \
        T* o = (T*)out;                                                                            \
        for (int64_t i = 0; i < n_idx; ++i) {                                                      \
            T* dst = o + idx[i] * row_len;                                                         \
            const T* from = s + i * row_len;                                                       \
            for (int64_t j = 0; j < row_len; ++j) {                                                \
                dst[j] = ADD(dst[j], from[j]);                                                     \
            }                                                                                      \
        }                                                                                          \
        break;                                                                                     \
    }

int fc_scatter_add(int dtype, int64_t n_idx, const int64_t* idx, int64_t rows, int64_t row_len, const void* src,
                   void* out)
{
    int64_t n_src, n_out;
    int status = check_tables(dtype, n_idx, rows, row_len, &n_src, &n_out);
    if (status != FC_OK) {
        return status;
    }
    if (dtype == FC_BOOL) {
        return FC_ERR_DTYPE;
    }
    if (ku_bad_ptr(idx, n_idx) || ku_bad_ptr(src, n_src) || ku_bad_ptr(out, n_out)) {
        return FC_ERR_NULL;
    }
    status = check_indices(idx, n_idx, rows);
    if (status != FC_OK || n_out == 0) {
        return status;
    }
    memset(out, 0, (size_t)(n_out * ku_dtype_size(dtype))); /* all-zero bits: 0, 0.0f and 0.0 */
    switch (dtype) {
    case FC_F32:
        SCATTER_LOOP(float, fc_ew_add_f32)
    case FC_F64:
        SCATTER_LOOP(double, fc_ew_add_f64)
    default:
        SCATTER_LOOP(int64_t, fc_ew_add_i64)
    }
    return FC_OK;
}

#define ONE_HOT_LOOP(T, ONE)                                                                       \
    {                                                                                              \
        T* o = (T*)out;                                                                            \
        for (int64_t i = 0; i < n; ++i) {                                                          \
            o[i * classes + labels[i]] = (ONE);                                                    \
        }                                                                                          \
        break;                                                                                     \
    }

int fc_one_hot(int dtype, int64_t n, const int64_t* labels, int64_t classes, void* out)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    const int64_t n_out = ku_mul(n, classes);
    if (n_out < 0 || ku_mul(n_out, ku_dtype_size(dtype)) < 0) {
        return FC_ERR_SIZE;
    }
    if (ku_bad_ptr(labels, n) || ku_bad_ptr(out, n_out)) {
        return FC_ERR_NULL;
    }
    const int status = check_indices(labels, n, classes);
    if (status != FC_OK || n_out == 0) {
        return status;
    }
    memset(out, 0, (size_t)(n_out * ku_dtype_size(dtype)));
    switch (dtype) {
    case FC_F32:
        ONE_HOT_LOOP(float, 1.0f)
    case FC_F64:
        ONE_HOT_LOOP(double, 1.0)
    case FC_I64:
        ONE_HOT_LOOP(int64_t, 1)
    default:
        ONE_HOT_LOOP(uint8_t, 1)
    }
    return FC_OK;
}
