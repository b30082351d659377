/* The portable vmath table (libm through ew_math.h) and the choice of table, made once. */
#include "vmath.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/flexcore.h"

#define SCALAR_FN(NAME)                                                                            \
    static void scalar_##NAME(const float* x, float* y, int64_t n)                                 \
    {                                                                                              \
        for (int64_t i = 0; i < n; ++i) {                                                          \
            y[i] = fc_ew_##NAME##_f32(x[i]);                                                       \
        }                                                                                          \
    }

SCALAR_FN(exp)
SCALAR_FN(log)
SCALAR_FN(tanh)
SCALAR_FN(sigmoid)

static const fc_vmath_table scalar_table = {"scalar", scalar_exp, scalar_log, scalar_tanh, scalar_sigmoid};

const fc_vmath_table* fc_vmath_f32(void)
{
    /* Racing first calls store the same pointer, so a relaxed atomic is all the "once" needed. */
    static _Atomic(const fc_vmath_table*) chosen = NULL;
    const fc_vmath_table* t = atomic_load_explicit(&chosen, memory_order_relaxed);
    if (t == NULL) {
        t = &scalar_table;
        if (fc_vmath_avx2 != NULL && strcmp(fc_cpu_isa(), "scalar") != 0) {
            t = fc_vmath_avx2; /* avx2 or avx512: both have AVX2 + FMA */
        }
        atomic_store_explicit(&chosen, t, memory_order_relaxed);
    }
    return t;
}
