/* The GEMM loop nest and the fused epilogue, for float and double (loops_tmpl.h). */
#include "flexcore/ew_math.h"
#include "gemm_internal.h"
#include "../src/vmath.h"

/* B panels packed together right before use when m fits one MC block (see loops_tmpl.h): a few
 * at a time read a few consecutive cache lines of each row of B instead of one, which the
 * hardware prefetchers follow better (measured: +3% on 32 x 1024 x 256); the group stays in L2. */
#define FC_GEMM_JIT_PANELS 4

#define LP_T float
#define LP_NAME(x) fc_s##x
#define LP_EW(x) fc_ew_##x##_f32
/* float32 sigmoid and tanh epilogues run the vectorised functions (src/vmath.h); 1: done. */
#define LP_VMATH(x, p, n) (fc_vmath_f32()->x((p), (p), (n)), 1)
#include "loops_tmpl.h"
#undef LP_VMATH
#undef LP_T
#undef LP_NAME
#undef LP_EW

#define LP_T double
#define LP_NAME(x) fc_d##x
#define LP_EW(x) fc_ew_##x##_f64
#define LP_VMATH(x, p, n) 0
#include "loops_tmpl.h"
#undef LP_VMATH
#undef LP_T
#undef LP_NAME
#undef LP_EW
