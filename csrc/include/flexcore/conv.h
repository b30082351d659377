/* flexcore convolution kernels: the post-autodiff conv ops of flexcore/ir/fused_conv.py.
 *
 * Layouts are row-major (numpy's): x (N, C, H, W), w (O, C/groups, KH, KW), y (N, O, OH, OW).
 * A 1-d convolution is the 2-d one with H = KH = 1 (stride, dilation 1 and no padding on that
 * axis), which has the same memory layout. Each image is unfolded (im2col, rows (c, kh, kw),
 * columns (oh, ow)) into a scratch slot and multiplied by the GEMM, which writes the output in
 * NCHW directly; the data gradient multiplies by W^T and folds back (col2im); the weight gradient
 * accumulates G_n @ cols_n^T over the images. Images are shared among `slots` chunks run on the
 * GEMM's thread pool, each with its own scratch, so memory stays at one image's windows per slot.
 *
 * Modes (a, b -> out):
 *  - FC_CONV_FORWARD:         x, w -> y
 *  - FC_CONV_BACKWARD_DATA:   gy, w -> dx
 *  - FC_CONV_BACKWARD_WEIGHT: x, gy -> dw
 * The weight gradient sums the slots' partial sums in slot order, so for a given `slots` the
 * result does not depend on thread timing. */
#ifndef FLEXCORE_CONV_H
#define FLEXCORE_CONV_H

#include <stdint.h>

#include "flexcore/flexcore.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fc_conv_mode {
    FC_CONV_FORWARD = 0,
    FC_CONV_BACKWARD_DATA = 1,
    FC_CONV_BACKWARD_WEIGHT = 2,
    FC_CONV_MODE_COUNT = 3
} fc_conv_mode;

/* The geometry of one convolution; 1-d: h = kh = sh = dh = 1, ph_lo = ph_hi = 0. */
typedef struct fc_conv_geom {
    int64_t n, c, o, groups;
    int64_t h, w;
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t ph_lo, pw_lo, ph_hi, pw_hi;
    int64_t dh, dw;
} fc_conv_geom;

/* Checks the geometry (and slots >= 1) and gives the element counts of a, b and out for `mode`
 * and the scratch bytes fc_conv needs with `slots` (any pointer may be NULL). FC_ERR_SIZE for a
 * bad or overflowing geometry, FC_ERR_DTYPE / FC_ERR_OP for a bad dtype / mode. */
FC_API int fc_conv_sizes(int dtype, int mode, const fc_conv_geom* g, int64_t slots, int64_t* a_count,
                         int64_t* b_count, int64_t* out_count, int64_t* scratch_bytes);

/* Runs the convolution `mode` on float32 or float64 data (dtype an fc_dtype); `scratch` holds at
 * least the bytes fc_conv_sizes gives for `slots` (slots is capped at n). out must not overlap
 * a, b or scratch. */
FC_API int fc_conv(int dtype, int mode, const fc_conv_geom* g, int64_t slots, const void* a, const void* b,
                   void* out, void* scratch);

/* fc_conv with a bias and an activation: for FC_CONV_FORWARD, y[n, o, ...] = act(conv + bias[o])
 * with bias o elements (NULL: none) and act FC_ACT_NONE or FC_ACT_RELU (flexcore.h's fc_act;
 * relu is ew_math.h's, NaN gives 0), rounded as a separate add and relu would be; both are
 * applied to each image's output right after its GEMM, while it is in cache. Another mode takes
 * only bias NULL and FC_ACT_NONE; anything else is FC_ERR_OP. */
FC_API int fc_conv_ex(int dtype, int mode, const fc_conv_geom* g, int64_t slots, const void* a, const void* b,
                      const void* bias, int act, void* out, void* scratch);

/* Pooling over windows of x (N, C, H, W) (1-d: H = KH = 1), dilation 1, padding that reads
 * -inf, as the max_pool composite (max over unfold's windows) defines it. Modes (ins -> out):
 *  - FC_POOL_MAX:      x -> y (N, C, OH, OW), the window maxima (NaN propagates, like np.max);
 *  - FC_POOL_TIES:     x, y -> count (N, C, OH, OW), how many taps of each window equal y
 *                      (padding taps count when y is -inf);
 *  - FC_POOL_BACKWARD: x, y, share -> dx (N, C, H, W): every tap of a window that equals y
 *                      receives the window's share, summed where windows overlap;
 *  - FC_POOL_GRAD:     x, y, g -> dx: FC_POOL_BACKWARD with share = g / (FC_POOL_TIES' count),
 *                      in one pass (max's gradient: ties share it equally);
 *  - FC_POOL_GRAD_RELU: x, y, g -> dx: FC_POOL_GRAD, then 0 where x > 0 fails (x > 0 ? dx : 0,
 *                      the gradient through a relu whose output x is);
 * and the two linear window maps under average pooling (padding reads 0):
 *  - FC_POOL_SUM:      x -> y (N, C, OH, OW), each window's sum;
 *  - FC_POOL_SPREAD:   s (N, C, OH, OW) -> dx (N, C, H, W): every tap of a window receives s,
 *                      summed where windows overlap (the adjoint of FC_POOL_SUM). */
typedef enum fc_pool_mode {
    FC_POOL_MAX = 0,
    FC_POOL_TIES = 1,
    FC_POOL_BACKWARD = 2,
    FC_POOL_SUM = 3,
    FC_POOL_SPREAD = 4,
    FC_POOL_GRAD = 5,
    FC_POOL_GRAD_RELU = 6,
    FC_POOL_MODE_COUNT = 7
} fc_pool_mode;

typedef struct fc_pool_geom {
    int64_t n, c;
    int64_t h, w;
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t ph_lo, pw_lo, ph_hi, pw_hi;
} fc_pool_geom;

/* Checks the geometry; *image_count = n * c * h * w, *out_count = n * c * oh * ow (either may be
 * NULL). */
FC_API int fc_pool_sizes(const fc_pool_geom* g, int64_t* image_count, int64_t* out_count);

/* Runs `mode` (an fc_pool_mode) on float32 or float64 data; `b` and `c` are the second and third
 * inputs where the mode has them (else ignored). */
FC_API int fc_pool(int dtype, int mode, const fc_pool_geom* g, const void* a, const void* b, const void* c,
                       void* out);

#ifdef __cplusplus
}
#endif

#endif /* FLEXCORE_CONV_H */
