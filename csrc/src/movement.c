/* Data movement: fc_copy_strided (every movement op of the IR is one or a few calls) and fc_fill.
 *
 * Elements are moved with fixed-size memcpy, which compilers turn into one load and one store and
 * which, unlike a cast to uint32_t*, is defined for any element type. */
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"

/* Transpose tiles: TILE x TILE elements, so a tile of 8-byte elements is 8 KiB and the source
 * lines of a tile stay in L1 while the tile is written. */
#define TILE 32

/* Strided run of n elements of size B (a compile-time constant in every expansion). */
#define STRIDED_RUN(B)                                                                             \
    for (int64_t i = 0; i < n; ++i) {                                                              \
        memcpy(d + i * ds * (B), s + i * ss * (B), (B));                                           \
    }

static void copy_run(int64_t elem, int64_t n, const char* s, int64_t ss, char* d, int64_t ds)
{
    if (ss == 1 && ds == 1) {
        memcpy(d, s, (size_t)(n * elem));
        return;
    }
    switch (elem) {
    case 1:
        STRIDED_RUN(1)
        break;
    case 2:
        STRIDED_RUN(2)
        break;
    case 4:
        STRIDED_RUN(4)
        break;
    case 8:
        STRIDED_RUN(8)
        break;
    default:
        for (int64_t i = 0; i < n; ++i) {
            memcpy(d + i * ds * elem, s + i * ss * elem, (size_t)elem);
        }
        break;
    }
}

/* d[i * d0 + j] = s[i + j * s1] for i < rows, j < cols (the last two axes of a transpose: the
 * source is contiguous along i, the destination along j), in TILE x TILE blocks. */
#define TRANSPOSE_TILE(B)                                                                          \
    for (int64_t i = i0; i < i1; ++i) {                                                            \
        for (int64_t j = j0; j < j1; ++j) {                                                        \
            memcpy(d + (i * d0 + j) * (B), s + (i + j * s1) * (B), (B));                           \
        }                                                                                          \
    }

static void copy_transpose(int64_t elem, int64_t rows, int64_t cols, const char* s, int64_t s1, char* d, int64_t d0)
{
    for (int64_t i0 = 0; i0 < rows; i0 += TILE) {
        const int64_t i1 = i0 + TILE < rows ? i0 + TILE : rows;
        for (int64_t j0 = 0; j0 < cols; j0 += TILE) {
            const int64_t j1 = j0 + TILE < cols ? j0 + TILE : cols;
            switch (elem) {
            case 1:
                TRANSPOSE_TILE(1)
                break;
            case 2:
                TRANSPOSE_TILE(2)
                break;
            case 4:
                TRANSPOSE_TILE(4)
                break;
            case 8:
                TRANSPOSE_TILE(8)
                break;
            default:
                for (int64_t i = i0; i < i1; ++i) {
                    for (int64_t j = j0; j < j1; ++j) {
                        memcpy(d + (i * d0 + j) * elem, s + (i + j * s1) * elem, (size_t)elem);
                    }
                }
                break;
            }
        }
    }
}

int fc_copy_strided(int elem_bytes, int ndim, const int64_t* shape, const void* src, const int64_t* src_strides,
                    void* dst, const int64_t* dst_strides)
{
    if (elem_bytes <= 0) {
        return FC_ERR_SIZE;
    }
    const int64_t elem = elem_bytes;
    int64_t count;
    int status = ku_check_shape(ndim, shape, &count);
    if (status != FC_OK) {
        return status;
    }
    int64_t storage[2][FC_MAX_NDIM];
    const int64_t* strides[2]; /* operand 0: dst, 1: src */
    status = ku_strides(ndim, shape, count, dst_strides, elem, storage[0], &strides[0]);
    if (status != FC_OK) {
        return status;
    }
    status = ku_strides(ndim, shape, count, src_strides, elem, storage[1], &strides[1]);
    if (status != FC_OK) {
        return status;
    }
    if (ku_bad_ptr(src, count) || ku_bad_ptr(dst, count)) {
        return FC_ERR_NULL;
    }
    if (count == 0) {
        return FC_OK;
    }
    ku_layout L;
    ku_coalesce(ndim, shape, 2, strides, &L);
    const int last = L.ndim - 1;
    const char* s = (const char*)src;
    char* d = (char*)dst;
    int64_t idx[FC_MAX_NDIM] = {0};
    int64_t off[2] = {0, 0};

    /* A transpose of the last two axes: worth blocking once the source run is not contiguous. */
    if (L.ndim >= 2 && L.stride[0][last] == 1 && L.stride[1][last] != 1 && L.stride[1][last - 1] == 1 &&
        L.shape[last] * L.shape[last - 1] >= TILE * TILE / 4) {
        do {
            copy_transpose(elem, L.shape[last - 1], L.shape[last], s + off[1] * elem, L.stride[1][last],
                           d + off[0] * elem, L.stride[0][last - 1]);
        } while (ku_next(&L, last - 1, 2, idx, off));
        return FC_OK;
    }
    do {
        copy_run(elem, L.shape[last], s + off[1] * elem, L.stride[1][last], d + off[0] * elem, L.stride[0][last]);
    } while (ku_next(&L, last, 2, idx, off));
    return FC_OK;
}

#define FILL_LOOP(T, VALUE)                                                                        \
    {                                                                                              \
        const T v = (VALUE);                                                                       \
        T* p = (T*)dst;                                                                            \
        for (int64_t i = 0; i < n; ++i) {                                                          \
            p[i] = v;                                                                              \
        }                                                                                          \
        break;                                                                                     \
    }

int fc_fill(int dtype, int64_t n, double value, void* dst)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    if (n < 0 || ku_mul(n, ku_dtype_size(dtype)) < 0) {
        return FC_ERR_SIZE;
    }
    if (ku_bad_ptr(dst, n)) {
        return FC_ERR_NULL;
    }
    switch (dtype) {
    case FC_F32:
        FILL_LOOP(float, (float)value)
    case FC_F64:
        FILL_LOOP(double, value)
    case FC_I64:
        FILL_LOOP(int64_t, fc_ew_f64_to_i64(value))
    default:
        FILL_LOOP(uint8_t, (uint8_t)(value != 0.0))
    }
    return FC_OK;
}
