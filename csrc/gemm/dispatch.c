/* The per-ISA table of GEMM contexts and the choice among them, made once per process from
 * fc_cpu_isa() (so FLEXCORE_ISA=scalar|avx2|avx512 forces a lower path). */
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "gemm_internal.h"

/* Lowest instruction set first; the index is the level fc_gemm_isa_level reports. */
static const fc_gemm_ctx* const contexts[] = {
    &fc_gemm_ctx_ref,
#if FC_GEMM_X86
    &fc_gemm_ctx_avx2,
    &fc_gemm_ctx_avx512,
#endif
};

enum { N_CONTEXTS = (int)(sizeof contexts / sizeof contexts[0]) };

static const char* const level_names[] = {"scalar", "avx2", "avx512"};

int fc_gemm_isa_level(const char* isa)
{
    for (int level = 0; level < (int)(sizeof level_names / sizeof level_names[0]); ++level) {
        if (isa != NULL && strcmp(isa, level_names[level]) == 0) {
            return level;
        }
    }
    return -1;
}

const fc_gemm_ctx* const* fc_gemm_ctx_all(int* count)
{
    *count = N_CONTEXTS;
    return contexts;
}

const fc_gemm_ctx* fc_gemm_ctx_active(void)
{
    /* Racing first calls store the same pointer, so a relaxed atomic is all the "once" needed. */
    static _Atomic(const fc_gemm_ctx*) chosen = NULL;
    const fc_gemm_ctx* ctx = atomic_load_explicit(&chosen, memory_order_relaxed);
    if (ctx == NULL) {
        const char* isa = fc_cpu_isa();
        ctx = contexts[0]; /* the portable kernels, when nothing better was compiled */
        for (int i = 0; i < N_CONTEXTS; ++i) {
            if (strcmp(contexts[i]->isa, isa) == 0) {
                ctx = contexts[i];
            }
        }
        atomic_store_explicit(&chosen, ctx, memory_order_relaxed);
    }
    return ctx;
}
